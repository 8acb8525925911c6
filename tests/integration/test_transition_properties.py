"""The guarded transition of the real repository against the model of the unit properties:
for any attempted sequence (repeats, reorderings, arbitrary targets) the row and its audit
trail go through exactly the statuses the model predicts, along documented edges only; with a
move's own writes (begin, roll back) among them too."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from devstack.roles import Layout
from infra.db.repository import TenantRepository, TransitionRefused
from infra.db.servers import ServerRepository
from infra.db.tenant_moves import MoveConflict, MoveRepository
from tenancy.fleet import DEFAULT_POOL, StorageServer
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.support.storage_fleet import own_metadata_database
from tests.unit.test_status_properties import Move, apply_all, assert_legal_path

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


# A fleet of two servers of one pool for `begin` to check a target against (rows only: no
# storage is made); a move goes to the one the tenant is not on (another PostgreSQL server:
# a move never goes to the one it is on).
_FLEET = [
    StorageServer(name=name, url=f"postgresql://platform@127.0.0.1:{port}/x", max_tenants=1000)
    for name, port in (("default", 5432), ("prop-b", 5433))
]
_PLACEMENT = dict.fromkeys(SlaTier, DEFAULT_POOL)
moves_and_transitions = st.lists(
    st.one_of(
        st.sampled_from(list(TenantStatus)),
        st.sampled_from([Move(TenantStatus.MOVING), Move(TenantStatus.ACTIVE)]),
    ),
    max_size=14,
)


async def _attempt_with_moves(url: str, attempts: list[Any]) -> tuple[list[Any], list[Any]]:
    async with AsyncConnectionPool(url, min_size=1, max_size=3) as pool:
        tenants, moves = TenantRepository(pool), MoveRepository(pool)
        tenant_id = unique_id("propm")
        spec = TenantSpec(
            id=tenant_id, name="Prop", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
        )
        await tenants.insert(spec, f"wf-{tenant_id}", "run", ["svc"])
        await ServerRepository(pool).place(tenant_id, _FLEET, _PLACEMENT)
        observed = [TenantStatus.PROVISIONING]
        for attempt in attempts:
            with contextlib.suppress(TransitionRefused, MoveConflict):
                if attempt == Move(TenantStatus.MOVING):
                    await moves.begin(tenant_id, "property", None, None, _FLEET, _PLACEMENT)
                elif isinstance(attempt, Move):
                    await moves.roll_back(tenant_id, "property", cancelled=False)
                else:
                    await tenants.transition(tenant_id, attempt, None, "property")
            tenant = await tenants.get(tenant_id)
            assert tenant is not None
            # The move is on the row exactly while the tenant is MOVING.
            assert (tenant.move is not None) is (tenant.status is TenantStatus.MOVING)
            if tenant.status is not observed[-1]:
                observed.append(tenant.status)
        events = await tenants.events(tenant_id)
    trail = [TenantStatus.PROVISIONING] + [
        e.new_status for e in events if e.action is EventAction.STATUS_CHANGED
    ]
    return observed, trail


@pytest.fixture(scope="module")
def moves_db_url(pg_server_url: str, database_roles: Layout) -> str:
    """A metadata database of these tests' own: a MOVING tenant left behind by an example
    would be drift to every other test reading the session's."""
    return own_metadata_database(pg_server_url)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(attempts=moves_and_transitions)
def test_moves_and_transitions_follow_the_model(moves_db_url: str, attempts: list[Any]) -> None:
    # The model's way to ACTIVE first (a move begins only from there), then anything.
    attempts = [TenantStatus.MIGRATING, TenantStatus.ACTIVE, *attempts]
    observed, trail = asyncio.run(_attempt_with_moves(moves_db_url, attempts))

    expected = apply_all(attempts)
    assert observed == expected
    assert trail == expected
    assert_legal_path(observed)
