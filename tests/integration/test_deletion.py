"""Offboarding through the API, against real PostgreSQL, Temporal and HTTP services: schedule,
restore, purge with backup and per-service teardown, failures and their retry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from temporalio.client import Client

from api.auth import DELETE_SCOPE, READ_SCOPE, WRITE_SCOPE
from infra.db.repository import TenantRepository
from tenancy.models import EventAction
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import (
    api_stack,
    body,
    token_for,
    wait_status,
)
from tests.support.scripted_service import ScriptedService
from tests.support.storage import storage_exists

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ALL_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE)


@pytest.mark.parametrize("mode", ["SCHEMA", "DATABASE"])
async def test_immediate_deletion_backs_up_tears_down_and_drops(
    mode: str,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    services = (("backend-service", backend[1]), ("auth-service", auth[1]))
    settings = make_settings(*services, deletion_backup_dir=tmp_path / "backups")
    tenant_id = unique_id()
    token = token_for(keys_dir, "olivia", *ALL_SCOPES)
    async with api_stack(temporal_client, settings, token) as api:
        created = await api.post("/api/tenants", json=body(tenant_id, storageMode=mode))
        assert created.status_code == 202, created.text
        await wait_status(api, tenant_id, "ACTIVE")
        assert storage_exists(storage_db_url, tenant_id, mode)

        answer = await api.delete(
            f"/api/tenants/{tenant_id}", params={"graceSeconds": 0, "reason": "churned"}
        )
        assert answer.status_code == 202, answer.text
        scheduled = answer.json()
        assert scheduled["status"] in {"DELETION_SCHEDULED", "DELETING", "DELETED"}
        assert scheduled["deletion"]["requestedBy"] == "olivia"
        assert scheduled["deletion"]["reason"] == "churned"
        assert scheduled["deletion"]["purgeAt"] == scheduled["deletion"]["requestedAt"]
        deleted = await wait_status(api, tenant_id, "DELETED")
        listed = (await api.get("/api/tenants", params={"limit": 100})).json()["items"]
        only_deleted = (await api.get("/api/tenants", params={"status": "DELETED"})).json()
        again = await api.post("/api/tenants", json=body(tenant_id))
        retry = await api.post(f"/api/tenants/{tenant_id}/retry-provisioning")

    assert deleted["jdbcUrl"] is None
    assert not storage_exists(storage_db_url, tenant_id, mode)
    for service, _ in (backend, auth):
        calls = service.teardowns_for(tenant_id)
        assert len(calls) == 1
        assert calls[0].idempotency_key
    assert tenant_id not in {t["id"] for t in listed}
    assert tenant_id in {t["id"] for t in only_deleted["items"]}
    assert again.status_code == 409
    assert retry.status_code == 409
    backup = deleted["deletion"]["backup"]
    data = Path(backup["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    assert len(data) == backup["sizeBytes"]
    actions = [e.action for e in await tenants.events(tenant_id)]
    assert EventAction.DELETION_REQUESTED in actions
    assert EventAction.BACKUP_TAKEN in actions


async def test_restore_in_the_grace_period_returns_the_tenant(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    services = (("backend-service", backend[1]), ("auth-service", auth[1]))
    settings = make_settings(*services)
    tenant_id = unique_id()
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "olivia", *ALL_SCOPES)
    ) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "ACTIVE")
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "DELETION_SCHEDULED"
        twice = await api.delete(f"/api/tenants/{tenant_id}")
        restored = await api.post(f"/api/tenants/{tenant_id}/restore")
        assert restored.status_code == 202, restored.text
        again = await api.post(f"/api/tenants/{tenant_id}/restore")
        second = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600})
        back = await api.post(f"/api/tenants/{tenant_id}/restore")

    assert twice.status_code == 409
    assert restored.json()["status"] == "ACTIVE"
    assert restored.json()["deletion"] is None
    assert again.status_code == 409
    assert second.status_code == 202, second.text
    assert back.status_code == 202
    assert storage_exists(storage_db_url, tenant_id, "SCHEMA")
    assert backend[0].teardowns_for(tenant_id) == []
    actions = [e.action for e in await tenants.events(tenant_id)]
    assert actions.count(EventAction.DELETION_CANCELLED) == 2


async def test_delete_needs_the_delete_scope(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    services = (("backend-service", backend[1]), ("auth-service", auth[1]))
    tenant_id = unique_id()
    async with api_stack(temporal_client, make_settings(*services), token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "ACTIVE")
        refused = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        restore = await api.post(f"/api/tenants/{tenant_id}/restore")
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()
    assert refused.status_code == 403
    assert restore.status_code == 403
    assert after["status"] == "ACTIVE"
    assert after["deletion"] is None
    assert isinstance(refused, httpx.Response)


async def test_the_reference_services_tear_down_their_part_before_the_drop(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    reference_services: list[tuple[str, str]],
    tenants: TenantRepository,
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    settings = make_settings(*reference_services)
    tenant_id = unique_id()
    token = token_for(keys_dir, "olivia", *ALL_SCOPES)
    async with api_stack(temporal_client, settings, token) as api:
        created = await api.post("/api/tenants", json=body(tenant_id, storageMode="DATABASE"))
        assert created.status_code == 202, created.text
        await wait_status(api, tenant_id, "ACTIVE")
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        deleted = await wait_status(api, tenant_id, "DELETED")

    assert deleted["jdbcUrl"] is None
    assert not storage_exists(storage_db_url, tenant_id, "DATABASE")
    # Both services answered their teardown (200 with what they dropped, or 404): the purge
    # recorded each as done before it dropped the database.
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "SELECT deletion_torn_down FROM tenants WHERE id = %s", (tenant_id,)
        ).fetchone()
    assert row is not None
    assert set(row[0]) == {name for name, _ in reference_services}
