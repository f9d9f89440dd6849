"""lune: lune/commands."""
