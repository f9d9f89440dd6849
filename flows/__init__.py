"""lune: flows."""
