"""The guarded transition of the real repository against the model of the unit properties:
for any attempted sequence (repeats, reorderings, arbitrary targets) the row and its audit
trail go through exactly the statuses the model predicts, along documented edges only."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantRepository, TransitionRefused
from tenancy.models import EventAction, StorageMode, TenantSpec
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.unit.test_status_properties import apply_all, assert_legal_path

pytestmark = pytest.mark.integration


async def _attempt_all(url: str, targets: list[TenantStatus]) -> tuple[list[Any], list[Any]]:
    async with AsyncConnectionPool(url, min_size=1, max_size=2) as pool:
        tenants = TenantRepository(pool)
        tenant_id = unique_id("prop")
        spec = TenantSpec(
            id=tenant_id, name="Prop", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
        )
        await tenants.insert(spec, f"wf-{tenant_id}", "run", ["svc"])
        observed = [TenantStatus.PROVISIONING]
        for target in targets:
            with contextlib.suppress(TransitionRefused):
                await tenants.transition(tenant_id, target, None, "property")
            tenant = await tenants.get(tenant_id)
            assert tenant is not None
            if tenant.status is not observed[-1]:
                observed.append(tenant.status)
        events = await tenants.events(tenant_id)
    trail = [TenantStatus.PROVISIONING] + [
        e.new_status for e in events if e.action is EventAction.STATUS_CHANGED
    ]
    return observed, trail


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(targets=st.lists(st.sampled_from(list(TenantStatus)), max_size=12))
def test_repository_follows_the_model(platform_db_url: str, targets: list[TenantStatus]) -> None:
    observed, trail = asyncio.run(_attempt_all(platform_db_url, targets))

    expected = apply_all(targets)
    assert observed == expected
    assert trail == expected
    assert_legal_path(observed)
