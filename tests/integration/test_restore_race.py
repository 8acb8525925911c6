"""Racing restores of one scheduled deletion: exactly one is taken (202, one DELETION_CANCELLED
event, one status change) and every other is a 409, as racing DELETEs are; with the deletion's
run open (it takes the signal and ends) and with no run open. Against the real API, Temporal,
PostgreSQL and HTTP downstream services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowExecutionStatus

from infra.db.deletions import DeletionRepository
from tenancy.naming import deletion_workflow_id
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RACERS = 20


async def status_of(api: httpx.AsyncClient, tenant_id: str) -> str:
    answer = await api.get(f"/api/tenants/{tenant_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


async def scheduled_tenant(api: httpx.AsyncClient) -> str:
    """A new ACTIVE tenant whose deletion is scheduled an hour out."""
    tenant_id = unique_id("race")
    body = {"id": tenant_id, "name": "Race Co", "storageMode": "SCHEMA", "slaTier": "BASIC"}
    created = await api.post("/api/tenants", json=body)
    assert created.status_code == 202, created.text
    await eventually(lambda: status_of(api, tenant_id), lambda s: s == "ACTIVE")
    deleted = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600})
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["status"] == "DELETION_SCHEDULED"
    return tenant_id


async def race_restores(api: httpx.AsyncClient, tenant_id: str) -> list[httpx.Response]:
    return await asyncio.gather(
        *(
            api.post(f"/api/tenants/{tenant_id}/restore", params={"reason": f"racer {i}"})
            for i in range(RACERS)
        )
    )


async def trail(api: httpx.AsyncClient, tenant_id: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/api/tenants/{tenant_id}/events")
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]  # type: ignore[no-any-return]


def assert_one_taken(answers: list[httpx.Response], events: list[dict[str, Any]]) -> None:
    assert sorted(a.status_code for a in answers) == [202] + [409] * (RACERS - 1), [
        a.text for a in answers if a.status_code not in (202, 409)
    ]
    refused = [a for a in answers if a.status_code == 409]
    assert all(a.headers["content-type"] == "application/problem+json" for a in refused)
    (taken,) = [a for a in answers if a.status_code == 202]
    assert taken.json()["status"] == "ACTIVE"
    assert taken.json()["deletion"] is None
    cancelled = [e for e in events if e["action"] == "DELETION_CANCELLED"]
    assert len(cancelled) == 1, cancelled
    # The event carries the reason of the request that was answered 202.
    assert cancelled[0]["reason"] == taken.request.url.params["reason"]
    restored = [
        e
        for e in events
        if e.get("oldStatus") == "DELETION_SCHEDULED" and e.get("newStatus") == "ACTIVE"
    ]
    assert len(restored) == 1, restored


async def test_of_twenty_racing_restores_exactly_one_is_taken(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    settings = make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        tenant_id = await scheduled_tenant(api)

        answers = await race_restores(api, tenant_id)
        events = await trail(api, tenant_id)
        run = await temporal_client.get_workflow_handle(deletion_workflow_id(tenant_id)).describe()
        again = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600})

    assert_one_taken(answers, events)
    # The deletion's run took the restore and ended: a new deletion can be asked at once.
    assert run.status is WorkflowExecutionStatus.COMPLETED
    assert again.status_code == 202, again.text
    assert backend[0].teardowns_for(tenant_id) == []


async def test_of_twenty_racing_restores_without_a_run_exactly_one_is_taken(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    settings = make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        tenant_id = await scheduled_tenant(api)
        # The run is gone (terminated by hand): restore writes the row itself.
        handle = temporal_client.get_workflow_handle(deletion_workflow_id(tenant_id))
        await handle.terminate("test: no deletion run open")

        answers = await race_restores(api, tenant_id)
        events = await trail(api, tenant_id)

    assert_one_taken(answers, events)


async def test_a_restore_the_run_hears_of_only_after_its_grace_period_ends_it_as_restored(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
    platform_db_url: str,
) -> None:
    # The restore is written, but its signal has not reached the run when the grace period
    # ends (it arrives just after, or Temporal was unreachable): the run's purge must find the
    # tenant restored and end, touching nothing, rather than fail.
    settings = make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))
    async with (
        AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool,
        api_client(settings, keys_dir, temporal=temporal_client) as api,
    ):
        tenant_id = unique_id("race")
        body = {"id": tenant_id, "name": "Race Co", "storageMode": "SCHEMA", "slaTier": "BASIC"}
        assert (await api.post("/api/tenants", json=body)).status_code == 202
        await eventually(lambda: status_of(api, tenant_id), lambda s: s == "ACTIVE")
        deleted = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 2})
        assert deleted.status_code == 202, deleted.text
        await DeletionRepository(pool).take_restore(tenant_id, "olivia", "changed my mind")
        handle = temporal_client.get_workflow_handle(deletion_workflow_id(tenant_id))
        await eventually(
            handle.describe,
            lambda d: d.status is not WorkflowExecutionStatus.RUNNING,
            timeout=60,
        )
        run = await handle.describe()
        tenant = (await api.get(f"/api/tenants/{tenant_id}")).json()
        events = await trail(api, tenant_id)

    assert run.status is WorkflowExecutionStatus.COMPLETED
    assert tenant["status"] == "ACTIVE"
    assert tenant["deletion"] is None
    assert [e["action"] for e in events].count("DELETION_CANCELLED") == 1
    assert not [e for e in events if e.get("newStatus") == "DELETING"]
    assert backend[0].teardowns_for(tenant_id) == []
