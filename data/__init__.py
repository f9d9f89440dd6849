"""The data contract (records), the DuckDB store, benchmark loaders, export, and the shipped sample."""
