"""lune: lune."""
