"""A fleet of storage servers for the tests of their API, CLI and console pages: three servers
over `FleetStage`'s PostgreSQL servers (so a test's own metadata database), tenants placed on
them as provisioning places them, and the worker's reachability check run once."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from temporalio.common import MetricMeter

from infra.db.repository import TenantRepository
from infra.db.server_checks import check_servers
from infra.db.servers import ServerRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.settings import Settings
from tests.support.storage_fleet import FleetStage

# In one server's URL, to show that no answer ever carries it (the servers trust loopback).
URL_SECRET = "s3cret-never-shown"
SERVERS = ("pg-a", "pg-b", "pg-c")
PLACEMENT = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"}


def fleet_settings(fleet_stage: FleetStage, **overrides: object) -> Settings:
    """Three servers in configuration order pg-a, pg-b (DATABASE only, a password in its URL),
    pg-c (pool `dedicated`), over a metadata database of the test's own."""
    secret = fleet_stage.server("pg-b", 1, "shared", 5, storageModes=["DATABASE"])
    secret["url"] = secret["url"].replace("platform@", f"platform:{URL_SECRET}@", 1)
    return fleet_stage.settings(
        (),
        servers=[
            fleet_stage.server("pg-a", 0, "shared", 10),
            secret,
            fleet_stage.server("pg-c", 2, "dedicated", 2),
        ],
        placement=PLACEMENT,
        **overrides,
    )


async def place_tenants(
    settings: Settings, prefix: str, count: int, tier: SlaTier, mode: StorageMode
) -> list[str]:
    """`count` tenant rows (PROVISIONING, no storage) placed as provisioning places them."""
    ids = [f"{prefix}_{i:03d}" for i in range(count)]
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool:
        tenants, servers = TenantRepository(pool), ServerRepository(pool)
        for tenant_id in ids:
            spec = TenantSpec(id=tenant_id, name=tenant_id, storage_mode=mode, sla_tier=tier)
            await tenants.insert(spec, f"wf-{tenant_id}", "seeded", [], "seed")
            await servers.place(tenant_id, settings.storage_fleet(), settings.placement_map())
    return ids


async def run_checks(settings: Settings) -> None:
    """The worker's periodic reachability check, once."""
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool:
        await check_servers(settings.storage_fleet(), ServerRepository(pool), MetricMeter.noop)


async def record_failed_check(settings: Settings, name: str, error: str) -> None:
    """A check of server `name` that did not reach it, as the worker records one."""
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=1) as pool:
        await ServerRepository(pool).record_check(name, reachable=False, version=None, error=error)
