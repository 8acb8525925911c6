"""Embedded infrastructure for development and tests: PostgreSQL and the Temporal dev server."""
