"""Looking at a tenant's storage from outside the platform (as the superuser)."""

from __future__ import annotations

import psycopg

from infra.db.fleet import StorageFleet
from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from infra.db.storage import StorageAdmin
from tenancy.fleet import DEFAULT_SERVER, StorageServer
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import storage_name
from tenancy.settings import UNBOUNDED_TENANTS


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


def one_server_fleet(
    admin: StorageAdmin, server_url: str, placements: ServerRepository
) -> StorageFleet:
    """A fleet of one server, `default` (as an installation without PLATFORM_STORAGE_SERVERS
    has), over an admin the test owns."""
    server = StorageServer.model_validate(
        {"name": DEFAULT_SERVER, "url": server_url, "maxTenants": UNBOUNDED_TENANTS}
    )
    return StorageFleet({server: admin}, placements)


async def tenant_row(
    tenants: TenantRepository, tenant_id: str, mode: StorageMode = StorageMode.SCHEMA
) -> None:
    """A PROVISIONING tenant's row, as the API writes it before its storage is created."""
    spec = TenantSpec(id=tenant_id, name=tenant_id, storage_mode=mode, sla_tier=SlaTier.BASIC)
    await tenants.insert(spec, f"wf-{tenant_id}", "run-1", [])
