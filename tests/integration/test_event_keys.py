"""An audit event written by a step that may run again (a local activity re-run after its
workflow task timed out) is written once per key."""

from __future__ import annotations

import pytest

from infra.db.repository import TenantRepository
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tests.conftest import unique_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_an_event_with_a_key_is_written_once(tenants: TenantRepository) -> None:
    tenant_id = unique_id("evk")
    spec = TenantSpec(
        id=tenant_id, name="Keyed", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    await tenants.insert(spec, f"wf-{tenant_id}", "run-1", ["backend-service"])

    for _ in range(3):
        await tenants.record_event(
            tenant_id, "olivia", EventAction.RETRY_REQUESTED, "retry-migration", f"{tenant_id}/u1"
        )
    await tenants.record_event(
        tenant_id, "olivia", EventAction.RETRY_REQUESTED, "retry-migration", f"{tenant_id}/u2"
    )
    for _ in range(2):
        await tenants.record_event(tenant_id, "olivia", EventAction.RETRY_REQUESTED, "no key")

    reasons = [
        e.reason for e in await tenants.events(tenant_id) if e.action is EventAction.RETRY_REQUESTED
    ]
    assert reasons == ["retry-migration", "retry-migration", "no key", "no key"]
