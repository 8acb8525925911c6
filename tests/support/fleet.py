"""A fleet of ACTIVE tenants written straight into the platform's tables, for tests whose
subject is what happens to a fleet (a rollout), not how each tenant got there."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from infra.db.storage import StorageAdmin
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus


async def seed_fleet(
    settings: Settings, tenants: TenantRepository, prefix: str, count: int
) -> list[str]:
    """`count` ACTIVE SCHEMA tenants whose schemas exist (created and granted by the platform's
    own StorageAdmin) but hold nothing yet: the fleet a service must now migrate. Written
    directly rather than provisioned one by one: the rollout is what the caller measures (and,
    through the reference services, it then applies every migration to each tenant)."""
    services = [service.name for service in settings.downstream_services]
    ids = [f"{prefix}_{i:03d}" for i in range(count)]
    async with (
        AsyncConnectionPool(
            settings.require_storage_database_url(),
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True},
        ) as pool,
        AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as metadata,
    ):
        placements = ServerRepository(metadata)
        fleet, placement = settings.storage_fleet(), settings.placement_map()
        admin = StorageAdmin(
            pool, settings.require_storage_database_url(), settings.service_db_roles()
        )
        for tenant_id in ids:
            spec = TenantSpec(
                id=tenant_id,
                name=tenant_id,
                storage_mode=StorageMode.SCHEMA,
                sla_tier=SlaTier.STANDARD,
            )
            await tenants.insert(spec, f"wf-{tenant_id}", "seeded", services, "seed")
            # Placed as provisioning places it.
            await placements.place(tenant_id, fleet, placement)
            location = await admin.ensure(tenant_id, StorageMode.SCHEMA)
            await tenants.set_jdbc_url(tenant_id, location.jdbc_url)
            for target in (TenantStatus.MIGRATING, TenantStatus.ACTIVE):
                await tenants.transition(tenant_id, target, None, "seed")
    return ids
