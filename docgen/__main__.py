"""`python -m docgen` writes the generated reference pages (placeholder until the generators land)."""
