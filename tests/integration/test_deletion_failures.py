"""Offboarding when things go wrong, through the API against real PostgreSQL, Temporal and HTTP
services: a failed backup, a service that fails its teardown for a while or for good, deleting
a tenant whose provisioning is stuck or still running, racing and invalid requests, and the
audit trail a full deletion leaves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.auth import DELETE_SCOPE, READ_SCOPE, WRITE_SCOPE
from api.routes.deletion import MAX_GRACE_SECONDS
from infra.db.repository import TenantRepository
from infra.db.storage import _LOCK_NAMESPACE as STORAGE_LOCK
from tenancy.models import EventAction
from tenancy.naming import (
    deletion_workflow_id,
    provision_workflow_id,
    storage_name,
    workflow_actor,
)
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.faults.downstream import Gate
from tests.integration.test_api import api_stack, body, token_for, wait_status
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage import storage_exists

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ALL_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE)


def services_of(
    backend: tuple[ScriptedService, str], auth: tuple[ScriptedService, str]
) -> tuple[tuple[str, str], ...]:
    return (("backend-service", backend[1]), ("auth-service", auth[1]))


async def provisioned(api: httpx.AsyncClient, tenant_id: str, **spec: Any) -> dict[str, Any]:
    """Create the tenant and wait until it is ACTIVE."""
    created = await api.post("/api/tenants", json=body(tenant_id, **spec))
    assert created.status_code == 202, created.text
    return await wait_status(api, tenant_id, "ACTIVE")


async def trail(api: httpx.AsyncClient, tenant_id: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/api/tenants/{tenant_id}/events")
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]  # type: ignore[no-any-return]


async def run_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    description = await client.get_workflow_handle(workflow_id).describe()
    return description.status


async def has_run(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_failed_backup_drops_nothing_and_retry_with_a_fixed_folder_deletes(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    broken = make_settings(*services_of(backend, auth), deletion_backup_dir=blocker / "backups")
    tenant_id = unique_id()
    token = token_for(keys_dir, "olivia", *ALL_SCOPES)
    async with api_stack(temporal_client, broken, token) as api:
        await provisioned(api, tenant_id)
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        failed = await wait_status(api, tenant_id, "DELETION_ERROR")
        events = await trail(api, tenant_id)

    assert failed["statusReason"].startswith("backup failed"), failed["statusReason"]
    assert str(blocker) in failed["statusReason"]
    assert failed["deletion"]["backup"] is None
    assert storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert backend[0].teardowns_for(tenant_id) == []
    assert auth[0].teardowns_for(tenant_id) == []
    assert "BACKUP_TAKEN" not in {e["action"] for e in events}

    # The operator fixes the folder and restarts the worker; the run waiting in
    # DELETION_ERROR takes the retry and backs up with the new worker's settings.
    fixed = make_settings(*services_of(backend, auth), deletion_backup_dir=tmp_path / "backups")
    async with api_stack(temporal_client, fixed, token) as api:
        retried = await api.post(f"/api/tenants/{tenant_id}/retry-deletion")
        assert retried.status_code == 202, retried.text
        deleted = await wait_status(api, tenant_id, "DELETED")

    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")
    backup = deleted["deletion"]["backup"]
    assert Path(backup["path"]).parent == tmp_path / "backups"
    assert hashlib.sha256(Path(backup["path"]).read_bytes()).hexdigest() == backup["sha256"]
    for service, _ in (backend, auth):
        assert len(service.teardowns_for(tenant_id)) == 1


async def test_a_teardown_answering_500_then_200_is_retried_with_the_same_key(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script_teardown(tenant_id, 500, 200)
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        await provisioned(api, tenant_id)
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        deleted = await wait_status(api, tenant_id, "DELETED")

    assert deleted["statusReason"] is None or "failed" not in deleted["statusReason"]
    calls = auth[0].teardowns_for(tenant_id)
    assert len(calls) == 2
    assert calls[0].idempotency_key
    assert calls[0].idempotency_key == calls[1].idempotency_key
    assert len(backend[0].teardowns_for(tenant_id)) == 1
    assert backend[0].teardowns_for(tenant_id)[0].idempotency_key != calls[0].idempotency_key
    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")


async def test_a_teardown_refused_with_400_stops_before_the_drop_and_retry_resumes(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script_teardown(tenant_id, 400)
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        await provisioned(api, tenant_id)
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        failed = await wait_status(api, tenant_id, "DELETION_ERROR")
        assert storage_exists(storage_db_url, tenant_id, "SCHEMA")
        restore = await api.post(f"/api/tenants/{tenant_id}/restore")
        again = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})

        auth[0].script_teardown(tenant_id, 200)
        retried = await api.post(f"/api/tenants/{tenant_id}/retry-deletion")
        assert retried.status_code == 202, retried.text
        await wait_status(api, tenant_id, "DELETED")
        late_retry = await api.post(f"/api/tenants/{tenant_id}/retry-deletion")

    reason = failed["statusReason"]
    assert reason.startswith("teardown failed"), reason
    assert "auth-service" in reason
    assert "HTTP 400" in reason
    assert "scripted failure 400" in reason
    assert "backend-service" not in reason
    assert restore.status_code == 409
    assert again.status_code == 409
    assert late_retry.status_code == 409
    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert len(backend[0].teardowns_for(tenant_id)) == 1, "a service done must not be re-run"
    refused, accepted = auth[0].teardowns_for(tenant_id)
    assert refused.idempotency_key == accepted.idempotency_key
    retries = [
        e for e in await tenants.events(tenant_id) if e.action is EventAction.RETRY_REQUESTED
    ]
    assert [e.actor for e in retries] == ["olivia"]


async def test_delete_in_migration_error_cancels_the_provisioning_run_and_purges(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script(tenant_id, 400)
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "MIGRATION_ERROR")
        provision = provision_workflow_id(tenant_id)
        assert await run_status(temporal_client, provision) is WorkflowExecutionStatus.RUNNING

        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        # The deletion answers once the provisioning run has closed.
        ended = await run_status(temporal_client, provision)
        await wait_status(api, tenant_id, "DELETED")

    assert ended is WorkflowExecutionStatus.CANCELED
    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert len(auth[0].calls_for(tenant_id)) == 1
    for service, _ in (backend, auth):
        assert len(service.teardowns_for(tenant_id)) == 1


async def test_restore_of_a_deletion_from_migration_error_leaves_retry_migration_working(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script(tenant_id, 400, 200)
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        before = await wait_status(api, tenant_id, "MIGRATION_ERROR")
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600})
        assert answer.status_code == 202, answer.text
        provision_ended = await run_status(temporal_client, provision_workflow_id(tenant_id))
        restored = await api.post(f"/api/tenants/{tenant_id}/restore")
        assert restored.status_code == 202, restored.text
        retried = await api.post(f"/api/tenants/{tenant_id}/retry-migration")
        assert retried.status_code == 202, retried.text
        active = await wait_status(api, tenant_id, "ACTIVE")

    assert answer.json()["status"] == "DELETION_SCHEDULED"
    assert provision_ended is WorkflowExecutionStatus.CANCELED
    assert restored.json()["status"] == "MIGRATION_ERROR"
    assert restored.json()["deletion"] is None
    assert active["workflowRunId"] != before["workflowRunId"]
    assert storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert len(auth[0].calls_for(tenant_id)) == 2
    assert auth[0].teardowns_for(tenant_id) == []


@pytest.fixture
def gated() -> Iterator[tuple[ScriptedService, Gate, str]]:
    """An auth-service whose calls a test can hold in flight (a migration that hangs)."""
    service = ScriptedService(version="auth-0002")
    gate = Gate()
    with serve(gate.wrap(service.app())) as url:
        try:
            yield service, gate, url
        finally:
            gate.open()


async def test_delete_while_a_migration_is_held_cancels_provisioning_and_purges(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    gated: tuple[ScriptedService, Gate, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    service, gate, url = gated
    tenant_id = unique_id()
    gate.close([tenant_id])
    settings = make_settings(("backend-service", backend[1]), ("auth-service", url))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await eventually(lambda: asyncio.sleep(0, gate.held(tenant_id)), bool)
        migrating = (await api.get(f"/api/tenants/{tenant_id}")).json()

        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        provision_ended = await run_status(temporal_client, provision_workflow_id(tenant_id))
        # The service comes back: the held migration reaches it after the run has gone.
        gate.open()
        await wait_status(api, tenant_id, "DELETED")
        await eventually(lambda: asyncio.sleep(0, service.calls_for(tenant_id)), bool)
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()

    assert migrating["status"] == "MIGRATING"
    assert provision_ended is WorkflowExecutionStatus.CANCELED
    assert after["status"] == "DELETED", "nothing of the cancelled run may move the tenant"
    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert len(service.teardowns_for(tenant_id)) == 1
    assert len(backend[0].teardowns_for(tenant_id)) == 1


async def test_of_twenty_racing_deletes_exactly_one_is_taken(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        await provisioned(api, tenant_id)
        url = f"/api/tenants/{tenant_id}"
        answers = await asyncio.gather(
            *(api.delete(url, params={"graceSeconds": 3600}) for _ in range(20))
        )
        events = await trail(api, tenant_id)
        restored = await api.post(f"/api/tenants/{tenant_id}/restore")

    assert sorted(a.status_code for a in answers) == [202] + [409] * 19, [
        a.text for a in answers if a.status_code not in (202, 409)
    ]
    refused = [a for a in answers if a.status_code == 409]
    assert all(a.headers["content-type"] == "application/problem+json" for a in refused)
    assert [e["action"] for e in events].count("DELETION_REQUESTED") == 1
    scheduled = [e for e in events if e.get("newStatus") == "DELETION_SCHEDULED"]
    assert len(scheduled) == 1
    assert restored.status_code == 202, restored.text


async def test_requests_out_of_place_are_refused_and_invalid_ones_schedule_nothing(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    settings = make_settings(*services_of(backend, auth))
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        await provisioned(api, tenant_id)
        url = f"/api/tenants/{tenant_id}"
        bad_params: tuple[dict[str, str | int], ...] = (
            {"graceSeconds": -1},
            {"graceSeconds": MAX_GRACE_SECONDS + 1},
            {"graceSeconds": 10**30},
            {"graceSeconds": "soon"},
            {"graceSeconds": 0, "reason": "churned\x07"},
            {"graceSeconds": 0, "reason": "two\nlines"},
            {"graceSeconds": 0, "reason": "x" * 501},
            {"graceSeconds": 0, "reason": ""},
        )
        invalid = [await api.delete(url, params=params) for params in bad_params]
        untouched = (await api.get(url)).json()
        unknown = await api.delete(f"/api/tenants/{unique_id()}", params={"graceSeconds": 0})
        retry_active = await api.post(f"{url}/retry-deletion")
        restore_active = await api.post(f"{url}/restore")
        events_before = await trail(api, tenant_id)
        had_run = await has_run(temporal_client, deletion_workflow_id(tenant_id))

        scheduled = await api.delete(url, params={"graceSeconds": 3600, "reason": "x" * 500})
        assert scheduled.status_code == 202, scheduled.text
        retry_scheduled = await api.post(f"{url}/retry-deletion")
        assert (await api.post(f"{url}/restore")).status_code == 202

        assert (await api.delete(url, params={"graceSeconds": 0})).status_code == 202
        await wait_status(api, tenant_id, "DELETED")
        delete_deleted = await api.delete(url, params={"graceSeconds": 0})
        restore_deleted = await api.post(f"{url}/restore")
        retry_deleted = await api.post(f"{url}/retry-deletion")
        retry_migration = await api.post(f"{url}/retry-migration")

    assert [a.status_code for a in invalid] == [422] * len(invalid), [a.text for a in invalid]
    assert untouched["status"] == "ACTIVE"
    assert untouched["deletion"] is None
    assert "DELETION_REQUESTED" not in {e["action"] for e in events_before}
    assert not had_run, "an invalid request must not start a deletion run"
    assert unknown.status_code == 404
    assert retry_active.status_code == 409
    assert restore_active.status_code == 409
    assert retry_scheduled.status_code == 409
    assert scheduled.json()["deletion"]["reason"] == "x" * 500
    assert delete_deleted.status_code == 409
    assert restore_deleted.status_code == 409
    assert retry_deleted.status_code == 409
    assert retry_migration.status_code == 409


async def test_a_full_deletion_leaves_who_asked_and_every_step_in_the_audit_trail(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    tenant_id = unique_id()
    settings = make_settings(*services_of(backend, auth), deletion_backup_dir=tmp_path)
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        await provisioned(api, tenant_id)
        answer = await api.delete(
            f"/api/tenants/{tenant_id}", params={"graceSeconds": 1, "reason": "contract ended"}
        )
        assert answer.status_code == 202, answer.text
        deleted = await wait_status(api, tenant_id, "DELETED")
        events = await trail(api, tenant_id)

    run = workflow_actor(deletion_workflow_id(tenant_id))
    start = next(i for i, e in enumerate(events) if e["action"] == "DELETION_REQUESTED")
    steps = [
        (e["action"], e["actor"], e.get("oldStatus"), e.get("newStatus")) for e in events[start:]
    ]
    assert steps == [
        ("DELETION_REQUESTED", "olivia", None, None),
        ("STATUS_CHANGED", "olivia", "ACTIVE", "DELETION_SCHEDULED"),
        ("STATUS_CHANGED", run, "DELETION_SCHEDULED", "DELETING"),
        ("BACKUP_TAKEN", run, None, None),
        ("STATUS_CHANGED", run, "DELETING", "DELETED"),
    ]
    assert events[start]["reason"] == "contract ended"
    assert events[start + 2]["reason"] == "grace period over"
    backup = deleted["deletion"]["backup"]
    taken = events[start + 3]["reason"]
    assert backup["path"] in taken
    assert backup["sha256"] in taken
    assert f"sizeBytes={backup['sizeBytes']}" in taken


async def test_a_drop_does_not_wait_behind_a_blocked_storage_creation(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    # `blocked`'s creation takes the worker's one creation slot and stops at the advisory lock
    # the platform takes around a schema's DDL (held here) while `leaving` is deleted.
    leaving, blocked = unique_id(), unique_id()
    settings = make_settings(*services_of(backend, auth), max_concurrent_storage_creations=1)
    with psycopg.connect(storage_db_url, autocommit=True) as holder:
        async with api_stack(
            temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
        ) as api:
            await provisioned(api, leaving)
            hold_storage_lock(holder, blocked)
            assert (await api.post("/api/tenants", json=body(blocked))).status_code == 202
            await eventually(lambda: asyncio.sleep(0, lock_waiters(storage_db_url)), bool)

            answer = await api.delete(f"/api/tenants/{leaving}", params={"graceSeconds": 0})
            assert answer.status_code == 202, answer.text
            deleted = await wait_status(api, leaving, "DELETED")
            still_blocked = (await api.get(f"/api/tenants/{blocked}")).json()
            release_storage_lock(holder, blocked)
            await wait_status(api, blocked, "ACTIVE")

    assert still_blocked["status"] == "PROVISIONING"
    assert deleted["jdbcUrl"] is None
    assert not storage_exists(storage_db_url, leaving, "SCHEMA")


async def test_delete_while_storage_creation_waits_leaves_no_storage_behind(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    # One storage creation at a time per server: `first`'s creation holds the slot, stopped by
    # the advisory lock the platform takes around a schema's DDL (held here), so `waiting` is
    # PROVISIONING, its creation waiting for the slot, when its deletion is asked.
    first, waiting = unique_id(), unique_id()
    settings = make_settings(*services_of(backend, auth), max_concurrent_storage_creations=1)
    with psycopg.connect(storage_db_url, autocommit=True) as holder:
        hold_storage_lock(holder, first)
        async with api_stack(
            temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
        ) as api:
            assert (await api.post("/api/tenants", json=body(first))).status_code == 202
            await eventually(lambda: asyncio.sleep(0, lock_waiters(storage_db_url)), bool)
            assert (await api.post("/api/tenants", json=body(waiting))).status_code == 202
            await eventually(
                lambda: started_activities(temporal_client, provision_workflow_id(waiting)),
                lambda started: "create_storage" in started,
            )
            provisioning = (await api.get(f"/api/tenants/{waiting}")).json()

            answer = await api.delete(f"/api/tenants/{waiting}", params={"graceSeconds": 0})
            assert answer.status_code == 202, answer.text
            await wait_status(api, waiting, "DELETED")
            release_storage_lock(holder, first)
            await wait_status(api, first, "ACTIVE")
            tombstone = (await api.get(f"/api/tenants/{waiting}")).json()

    assert provisioning["status"] == "PROVISIONING"
    assert tombstone["status"] == "DELETED"
    assert (tombstone["jdbcUrl"], storage_exists(storage_db_url, waiting, "SCHEMA")) == (
        None,
        False,
    ), "the cancelled run's creation must not outlive the deletion"


async def started_activities(client: Client, workflow_id: str) -> set[str]:
    """The types of the run's activities that a worker is running now."""
    description = await client.get_workflow_handle(workflow_id).describe()
    return {
        pending.activity_type.name
        for pending in description.raw_description.pending_activities
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    }


def lock_waiters(url: str) -> int:
    """How many sessions wait for the platform's storage lock on the server of `url`."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks"
            " WHERE locktype = 'advisory' AND classid = %s AND NOT granted",
            (STORAGE_LOCK,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def hold_storage_lock(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    """Take the advisory lock the platform holds around the DDL of the tenant's storage (its
    private namespace, imported as STORAGE_LOCK): a creation of that storage stops at it."""
    conn.execute(
        "SELECT pg_advisory_lock(%s, hashtext(%s))", (STORAGE_LOCK, storage_name(tenant_id))
    )


def release_storage_lock(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    conn.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(%s))", (STORAGE_LOCK, storage_name(tenant_id))
    )
