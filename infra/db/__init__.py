"""PostgreSQL access."""
