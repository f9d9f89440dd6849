"""Model-free generation rules: span types and swaps (``spans``) and templates (``templates``)."""
