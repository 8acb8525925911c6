"""The platform's own metadata tables, created and versioned by yoyo-migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

_log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _yoyo_url(database_url: str) -> str:
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError("the platform database URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def apply_platform_migrations(database_url: str) -> list[str]:
    """Bring the metadata schema up to date; safe to call from several processes at once."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    applied = [m.id for m in pending]
    if applied:
        _log.info("applied platform migrations: %s", ", ".join(applied))
    return applied
