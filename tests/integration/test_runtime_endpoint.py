"""The reference service's runtime endpoint finds each tenant through the platform's directory,
as a real service would, and answers as the tenant's status says: served when ACTIVE, read-only
while DELETION_SCHEDULED, 503 while not ready, 410 once gone, 404 when unknown; by revalidation
or by following the lifecycle events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from api.auth import DIRECTORY_SCOPE
from devstack.roles import Layout
from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.settings import DownstreamSettings
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.polling import eventually
from tests.support.servers import serve
from tests.support.storage import tenant_row
from tests.support.storage_fleet import own_metadata_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def body(tenant_id: str) -> dict[str, str]:
    return {"id": tenant_id, "name": "Runtime", "storageMode": "SCHEMA", "slaTier": "BASIC"}


async def answer_becomes(
    service: httpx.AsyncClient, method: str, path: str, status: int, **kwargs: Any
) -> httpx.Response:
    """The service's answer once it is `status` (the directory follows within its bounds)."""

    async def call() -> httpx.Response:
        return await service.request(method, path, **kwargs)

    found = await eventually(call, lambda r: r.status_code == status, timeout=30)
    assert found is not None
    return found


@pytest.mark.parametrize("follow", ["revalidating", "events"])
async def test_the_runtime_endpoint_follows_the_tenant_through_the_directory(
    follow: str,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    reference_services: list[tuple[str, str]],
    service_database_urls: dict[str, str],
    keys_dir: Path,
    nats_url: str,
    pg_server_url: str,
    database_roles: Layout,
) -> None:
    events = follow == "events"
    # Following events: a metadata database of its own, whose outbox holds only this test's
    # events (the session's holds every other test's, unpublished, which a relay would
    # publish first).
    following = (
        {
            "events_backend": "nats",
            "events_url": nats_url,
            "database_url": own_metadata_database(pg_server_url),
        }
        if events
        else {}
    )
    settings = make_settings(*reference_services, **following)
    tenant_id, waiting = unique_id("rt"), unique_id("rtw")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        runtime_settings = DownstreamSettings(
            service_name="backend-service",
            database_url=service_database_urls["backend-service"],
            platform_public_key_file=keys_dir / "platform-signing.pem",
            directory_url=str(api.base_url),
            directory_token=token_of(keys_dir, "backend-service", DIRECTORY_SCOPE),
            directory_events_url=nats_url if events else None,
            directory_max_age=timedelta(milliseconds=200),
        )
        created = await api.post("/api/tenants", json=body(tenant_id))
        assert created.status_code == 202, created.text
        await eventually(
            lambda: api.get(f"/api/tenants/{tenant_id}"),
            lambda r: r.json()["status"] == "ACTIVE",
            timeout=60,
        )
        async with AsyncConnectionPool(
            settings.require_database_url(), min_size=1, max_size=1
        ) as pool:
            await tenant_row(TenantRepository(pool), waiting)
        with serve(create_downstream_app(runtime_settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as service:
                written = await service.post(f"/tenants/{tenant_id}/notes", json={"text": "hi"})
                listed = await service.get(f"/tenants/{tenant_id}/notes")
                unknown = await service.get(f"/tenants/{unique_id('none')}/notes")
                not_ready = await service.get(f"/tenants/{waiting}/notes")

                scheduled = await api.delete(
                    f"/api/tenants/{tenant_id}", params={"graceSeconds": 3600}
                )
                assert scheduled.status_code == 202, scheduled.text
                refused = await answer_becomes(
                    service, "POST", f"/tenants/{tenant_id}/notes", 409, json={"text": "late"}
                )
                still_read = await service.get(f"/tenants/{tenant_id}/notes")

                restored = await api.post(f"/api/tenants/{tenant_id}/restore")
                assert restored.status_code == 202, restored.text
                again = await answer_becomes(
                    service, "POST", f"/tenants/{tenant_id}/notes", 201, json={"text": "back"}
                )

                purged = await api.post(f"/api/tenants/{tenant_id}/retry-deletion")
                gone = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
                assert gone.status_code == 202, gone.text
                after = await answer_becomes(service, "GET", f"/tenants/{tenant_id}/notes", 410)

    assert written.status_code == 201, written.text
    assert written.json()["text"] == "hi"
    assert [n["text"] for n in listed.json()["items"]] == ["hi"]
    assert unknown.status_code == 404
    assert not_ready.status_code == 503
    assert not_ready.headers["retry-after"] == "5"
    assert refused.json()["code"] == "tenant_leaving"
    assert still_read.status_code == 200
    # Writes made before the service learned of the deletion (within its directory's bound:
    # max_age, or an event's way) went through; none after the refusal.
    first, *late = [n["text"] for n in still_read.json()["items"]]
    assert first == "hi"
    assert set(late) <= {"late"}
    assert again.json()["text"] == "back"
    # retry-deletion is for DELETION_ERROR only: the tenant was ACTIVE then.
    assert purged.status_code == 409
    assert after.json()["code"] == "tenant_gone"
