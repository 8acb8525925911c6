"""Caps on concurrent storage creations per PostgreSQL server and on migration calls per
service: a burst queues for the slots instead of opening as many connections as there are
requests, and a hung service holds only its own slots."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.storage import StorageActivities
from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from infra.db.storage import StorageAdmin
from infra.limits import NoSlot, ServerLimits
from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType
from tenancy.fleet import DEFAULT_SERVER
from tenancy.models import MigrationRecord, StorageLocation, StorageMode, TenantSpec
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.faults.downstream import HangingService
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage import one_server_fleet, tenant_row

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@dataclasses.dataclass
class CountingService:
    """A downstream service that holds each migrate call briefly and records the most calls
    it had in flight at once (all handlers run on the server's one event loop)."""

    hold: float = 0.15
    in_flight: int = 0
    peak: int = 0
    calls: int = 0

    async def _migrate(self, _: Request) -> JSONResponse:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.in_flight -= 1
        return JSONResponse({"version": "v1"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/internal/tenants/{tenant_id}/migrate", self._migrate, methods=["POST"])]
        )


class CountingAdmin(StorageAdmin):
    """The real DDL, held a little longer, counting creations in flight."""

    def __init__(self, pool: AsyncConnectionPool[Any], server_url: str) -> None:
        super().__init__(pool, server_url)
        self.in_flight = 0
        self.peak = 0

    async def ensure(self, tenant_id: str, mode: StorageMode) -> StorageLocation:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            location = await super().ensure(tenant_id, mode)
            await asyncio.sleep(0.05)
            return location
        finally:
            self.in_flight -= 1


# Every tier to the one server's pool, as without PLATFORM_PLACEMENT.
PLACEMENT = Settings(database_url="postgresql://u@db:5432/m").placement_map()


def activity_env(start_to_close: timedelta) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, started_time=datetime.now(UTC), start_to_close_timeout=start_to_close
    )
    return env


async def test_a_burst_of_migrations_runs_at_most_the_cap_at_once_per_service(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
) -> None:
    # Held long enough that calls of tenants whose storage was created one after another
    # (storage cap 1) still overlap.
    backend, auth = CountingService(hold=0.5), CountingService(hold=0.5)
    ids = [unique_id("cap") for _ in range(8)]
    with serve(backend.app()) as backend_url, serve(auth.app()) as auth_url:
        settings = make_settings(
            ("backend-service", backend_url),
            ("auth-service", auth_url),
            max_concurrent_migrations=2,
            max_concurrent_storage_creations=1,
        )
        gateway = WorkflowGateway(temporal_client, settings)
        async with running_worker(temporal_client, settings):
            await asyncio.gather(
                *(
                    gateway.provision(
                        TenantSpec(
                            id=tenant_id,
                            name="Burst",
                            storage_mode=StorageMode.SCHEMA,
                            sla_tier="BASIC",
                        )
                    )
                    for tenant_id in ids
                )
            )

            async def statuses() -> list[TenantStatus | None]:
                found = [await tenants.get(tenant_id) for tenant_id in ids]
                return [t.status if t else None for t in found]

            await eventually(
                statuses, lambda s: all(x is TenantStatus.ACTIVE for x in s), timeout=60
            )

    assert (backend.calls, auth.calls) == (8, 8)
    # The cap held for each service, and the burst really queued for it.
    assert (backend.peak, auth.peak) == (2, 2)


async def test_storage_creations_run_at_most_the_cap_at_once(
    storage_db_url: str, tenants: TenantRepository, servers: ServerRepository
) -> None:
    async with AsyncConnectionPool(
        storage_db_url, min_size=1, max_size=8, kwargs={"autocommit": True}
    ) as pool:
        admin = CountingAdmin(pool, storage_db_url)
        fleet = one_server_fleet(admin, storage_db_url, servers)
        activities = StorageActivities(fleet, servers, tenants, ServerLimits(2), PLACEMENT)
        requests = [
            CreateStorageInput(tenant_id=unique_id("capst"), mode=StorageMode.SCHEMA)
            for _ in range(8)
        ]
        for request in requests:
            await tenant_row(tenants, request.tenant_id)
        created = await asyncio.gather(
            *(
                activity_env(timedelta(minutes=2)).run(activities.create_storage, request)
                for request in requests
            )
        )

    assert [c.schema_name for c in created] == [f"tenant_{r.tenant_id}" for r in requests]
    assert admin.peak == 2


async def test_a_creation_that_cannot_get_a_slot_in_time_fails_retryably(
    storage_db_url: str, tenants: TenantRepository, servers: ServerRepository
) -> None:
    limits = ServerLimits(1)
    async with AsyncConnectionPool(
        storage_db_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        admin = StorageAdmin(pool, storage_db_url)
        fleet = one_server_fleet(admin, storage_db_url, servers)
        activities = StorageActivities(fleet, servers, tenants, limits, PLACEMENT)
        request = CreateStorageInput(tenant_id=unique_id("capto"), mode=StorageMode.SCHEMA)
        await tenant_row(tenants, request.tenant_id)
        # The caps are per server: by its name.
        async with limits.slot(DEFAULT_SERVER, None):
            # Start-to-close barely above the DDL reserve: the wait budget is ~0.2 s.
            env = activity_env(timedelta(seconds=30.2))
            with pytest.raises(ApplicationError) as raised:
                await env.run(activities.create_storage, request)

    assert raised.value.type == FailureType.STORAGE_FAILED
    assert not raised.value.non_retryable
    assert "throttled" in raised.value.message


async def test_each_server_has_its_own_slots() -> None:
    limits = ServerLimits(1)
    async with limits.slot("db-a:5432", None), limits.slot("db-b:5432", timedelta(seconds=1)):
        with pytest.raises(NoSlot):
            async with limits.slot("db-a:5432", timedelta(milliseconds=50)):
                pass


async def test_a_hung_service_does_not_hold_the_slots_of_a_healthy_one(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
) -> None:
    hung = HangingService()
    healthy = ScriptedService()
    ids = [unique_id("iso") for _ in range(3)]
    with serve(hung.app()) as hung_url, serve(healthy.app()) as healthy_url:
        settings = make_settings(
            ("hung-service", hung_url),
            ("healthy-service", healthy_url),
            max_concurrent_migrations=1,
            migration_max_attempts=2,
            # Far beyond the test: the hung call holds its slot until it is released.
            migration_timeout=timedelta(seconds=120),
        )
        gateway = WorkflowGateway(temporal_client, settings)
        async with running_worker(temporal_client, settings):
            try:
                for tenant_id in ids:
                    await gateway.provision(
                        TenantSpec(
                            id=tenant_id,
                            name="Isolated",
                            storage_mode=StorageMode.SCHEMA,
                            sla_tier="BASIC",
                        )
                    )

                async def healthy_records() -> list[MigrationRecord]:
                    found = [await tenants.get(tenant_id) for tenant_id in ids]
                    return [
                        m
                        for t in found
                        if t is not None
                        for m in t.migrations
                        if m.service == "healthy-service"
                    ]

                async def hung_calls() -> int:
                    return sum(len(hung.calls_for(tenant_id)) for tenant_id in ids)

                await eventually(hung_calls, lambda n: n >= 1)
                records = await eventually(
                    healthy_records,
                    lambda rs: (
                        len(rs) == len(ids)
                        and all(r.status is MigrationStatus.SUCCEEDED for r in rs)
                    ),
                    timeout=30,
                )
                # The hung service held its one slot the whole time: its other calls waited.
                assert await hung_calls() == 1
            finally:
                hung.release()

    assert [r.attempts for r in records] == [1, 1, 1]
    assert sorted(call.tenant_id for call in healthy.calls) == sorted(ids)
