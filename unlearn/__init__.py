"""lune: unlearn."""
