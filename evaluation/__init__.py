"""lune: evaluation."""
