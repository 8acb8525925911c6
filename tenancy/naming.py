"""Tenant ids and the names derived from them: storage identifiers and the JDBC URL.

Every identifier that reaches SQL is built here from an id that passed `TENANT_ID_PATTERN`,
and is then still only ever used through `psycopg.sql.Identifier`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from tenancy.models import TENANT_ID_PATTERN, StorageLocation, StorageMode

_TENANT_ID = re.compile(TENANT_ID_PATTERN)
STORAGE_PREFIX = "tenant_"


class InvalidTenantId(ValueError):
    """The id does not match `TENANT_ID_PATTERN`."""


def check_tenant_id(tenant_id: str) -> str:
    """Return `tenant_id` unchanged, or raise `InvalidTenantId`."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidTenantId(f"tenant id {tenant_id!r} does not match {TENANT_ID_PATTERN}")
    return tenant_id


def provision_workflow_id(tenant_id: str) -> str:
    """The provisioning workflow's id: the business id, so a tenant has exactly one."""
    return f"tenant-provision-{check_tenant_id(tenant_id)}"


def deletion_workflow_id(tenant_id: str) -> str:
    """The deletion workflow's id: one deletion of a tenant open at a time."""
    return f"tenant-delete-{check_tenant_id(tenant_id)}"


def workflow_actor(workflow_id: str) -> str:
    """How a workflow's own steps appear in the audit trail."""
    return f"workflow:{workflow_id}"


def storage_name(tenant_id: str) -> str:
    """Name of the tenant's schema (SCHEMA mode) or database (DATABASE mode)."""
    return STORAGE_PREFIX + check_tenant_id(tenant_id)


def server_authority(server_url: str) -> str:
    """`host:port` of a PostgreSQL URL (IPv6 in brackets, 5432 by default): where it is,
    without who connects or with what password."""
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 5432}"


def storage_location(server_url: str, mode: StorageMode, tenant_id: str) -> StorageLocation:
    """Where a tenant's data lives on the storage server at `server_url`.

    The JDBC URL carries host, port and database only: credentials stay with each service.
    """
    parts = urlsplit(server_url)
    authority = server_authority(server_url)
    name = storage_name(tenant_id)
    if mode is StorageMode.SCHEMA:
        # libpq's default database is the user's name.
        database = unquote(parts.path.lstrip("/")) or parts.username or "postgres"
        return StorageLocation(
            mode=mode,
            database=database,
            schema_name=name,
            jdbc_url=f"jdbc:postgresql://{authority}/{database}?currentSchema={name}",
        )
    return StorageLocation(
        mode=mode,
        database=name,
        schema_name="public",
        jdbc_url=f"jdbc:postgresql://{authority}/{name}",
    )


def migration_task_queue(base_task_queue: str, service: str) -> str:
    """The task queue of one service's migration calls: each service's backlog waits in its
    own queue, so a hung service never holds the worker slots of another."""
    return f"{base_task_queue}.migrate.{service}"
