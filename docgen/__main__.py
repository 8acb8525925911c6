"""`python -m docgen` writes the generated reference pages (a placeholder until they land)."""
