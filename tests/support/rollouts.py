"""Rollout set-ups shared by the rollout tests: tenants rows written straight into the table
(the rollout, not provisioning, is the subject), and rollout requests."""

from __future__ import annotations

import uuid

from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.rollouts import RolloutRequest, RolloutStatus, Selector, WaveSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from workflows.rollout.contracts import RolloutInput
from workflows.rollout.starts import rollout_input


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


async def create_rollout(
    rollouts: RolloutRepository,
    settings: Settings,
    tenant_ids: list[str],
    actor: str,
    waves: list[WaveSpec] | None = None,
) -> RolloutInput:
    """A rollout of `tenant_ids` over the settings' services, recorded (RUNNING, its tenants
    PENDING) but not started; returns the input its run takes."""
    services = [service.name for service in settings.downstream_services]
    request = RolloutRequest(
        services=services,
        selector=Selector(tenant_ids=tenant_ids),
        waves=waves or [WaveSpec(name="all")],
        concurrency=2,
        max_failure_ratio=0.5,
    )
    rollout_id = uuid.uuid4().hex[:12]
    assert request.waves is not None
    await rollouts.create(rollout_id, request, services, request.waves, actor)
    return rollout_input(rollout_id, request, settings, actor)


async def cancel_rollouts(rollouts: RolloutRepository, *rollout_ids: str) -> None:
    """End rollouts a test left RUNNING without a run, so no later reconciliation in the
    session reports them."""
    for rollout_id in rollout_ids:
        await rollouts.change_status(rollout_id, RolloutStatus.CANCELLED, "test", None, "test ends")
