"""Rollout set-ups shared by the rollout tests: tenants rows written straight into the table
(the rollout, not provisioning, is the subject), and rollout requests."""

from __future__ import annotations

from infra.db.repository import TenantRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.status import TenantStatus


async def insert_active_tenants(tenants: TenantRepository, prefix: str, count: int) -> list[str]:
    """`count` ACTIVE tenant rows (no storage): enough for a rollout to select and count."""
    ids = [f"{prefix}_{i:03d}" for i in range(count)]
    for tenant_id in ids:
        spec = TenantSpec(
            id=tenant_id, name=tenant_id, storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.STANDARD
        )
        await tenants.insert(spec, f"wf-{tenant_id}", "seeded", ["svc"], "seed")
        for target in (TenantStatus.MIGRATING, TenantStatus.ACTIVE):
            await tenants.transition(tenant_id, target, None, "seed")
    return ids
