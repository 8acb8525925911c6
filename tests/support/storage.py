"""Looking at a tenant's storage from outside the platform (as the superuser)."""

from __future__ import annotations

import psycopg

from tenancy.naming import storage_name


def storage_exists(url: str, tenant_id: str, mode: str) -> bool:
    """Whether the tenant's schema (`SCHEMA`) or database (`DATABASE`) exists on the server
    of `url` (the storage database, for schemas)."""
    query = (
        "SELECT 1 FROM pg_namespace WHERE nspname = %s"
        if mode == "SCHEMA"
        else "SELECT 1 FROM pg_database WHERE datname = %s"
    )
    with psycopg.connect(url) as conn:
        return conn.execute(query, (storage_name(tenant_id),)).fetchone() is not None
