"""lune: generators."""
