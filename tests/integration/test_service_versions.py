"""`GET /api/services` and `GET /api/services/{name}/versions` against real PostgreSQL, Temporal
and HTTP services. The spread is global over the shared database, so every test configures
service names of its own and the counts are its tenants' alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import DELETE_SCOPE, READ_SCOPE, WRITE_SCOPE
from api.main import create_app
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import api_stack, body, token_for, wait_status
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ALL_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE)
OLD = "backend_0001_initial"
NEW = "backend_0002_project_archiving"


def service_name() -> str:
    """A service name no other test configures."""
    return f"svc-{uuid.uuid4().hex[:10]}"


async def versions_of(api: httpx.AsyncClient, service: str) -> dict[str, Any]:
    answer = await api.get(f"/api/services/{service}/versions")
    assert answer.status_code == 200, answer.text
    spread: dict[str, Any] = answer.json()
    return spread


async def test_spread_counts_versions_and_failures_of_non_deleted_tenants(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    rolling, other = service_name(), service_name()
    scripted = ScriptedService(version=OLD)
    with serve(scripted.app()) as url:
        settings = make_settings((rolling, url), (other, auth[1]))
        token = token_for(keys_dir, "olivia", *ALL_SCOPES)
        async with api_stack(temporal_client, settings, token) as api:
            empty = await versions_of(api, rolling)
            old_ones, new_one, broken = (
                [unique_id("ver") for _ in range(2)],
                unique_id(),
                unique_id(),
            )
            for tenant_id in old_ones:
                assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
                await wait_status(api, tenant_id, "ACTIVE")
            scripted.version = NEW
            assert (await api.post("/api/tenants", json=body(new_one))).status_code == 202
            await wait_status(api, new_one, "ACTIVE")
            scripted.script(broken, 400)
            assert (await api.post("/api/tenants", json=body(broken))).status_code == 202
            await wait_status(api, broken, "MIGRATION_ERROR")

            before = await versions_of(api, rolling)
            before_other = await versions_of(api, other)
            listed = (await api.get("/api/services")).json()["items"]

            # Being deleted, the tenant keeps its storage and still counts.
            scheduled = await api.delete(
                f"/api/tenants/{old_ones[1]}", params={"graceSeconds": 3600}
            )
            assert scheduled.status_code == 202, scheduled.text
            while_scheduled = await versions_of(api, rolling)
            restored = await api.post(f"/api/tenants/{old_ones[1]}/restore")
            assert restored.status_code == 202, restored.text

            deleted = await api.delete(f"/api/tenants/{old_ones[0]}", params={"graceSeconds": 0})
            assert deleted.status_code == 202, deleted.text
            await wait_status(api, old_ones[0], "DELETED")
            after = await versions_of(api, rolling)
            after_other = await versions_of(api, other)

    assert empty == {
        "service": rolling,
        "versions": {},
        "failed": 0,
        "minVersion": None,
        "tenants": 0,
    }
    assert before == {
        "service": rolling,
        "versions": {OLD: 2, NEW: 1},
        "failed": 1,
        "minVersion": OLD,
        "tenants": 4,
    }
    assert before_other == {
        "service": other,
        "versions": {"auth-0002": 4},
        "failed": 0,
        "minVersion": "auth-0002",
        "tenants": 4,
    }
    assert listed == [before, before_other]
    assert while_scheduled == before
    assert after == {
        "service": rolling,
        "versions": {OLD: 1, NEW: 1},
        "failed": 1,
        "minVersion": OLD,
        "tenants": 3,
    }
    assert after_other["tenants"] == 3
    assert after_other["versions"] == {"auth-0002": 3}


async def test_a_service_no_longer_configured_is_answered_while_tenants_have_records(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    retired, current = service_name(), service_name()
    tenant_id = unique_id("ver")
    async with api_stack(
        temporal_client, make_settings((retired, backend[1])), token_for(keys_dir)
    ) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "ACTIVE")

    headers = {"Authorization": f"Bearer {token_for(keys_dir)}"}
    with serve(create_app(make_settings((current, backend[1])))) as base_url:
        async with httpx.AsyncClient(base_url=base_url, headers=headers) as api:
            spread = await versions_of(api, retired)
            listed = (await api.get("/api/services")).json()["items"]
            unknown = await api.get(f"/api/services/{service_name()}/versions")

    assert spread["tenants"] == 1
    assert spread["versions"] == {"backend-0002": 1}
    assert [item["service"] for item in listed] == [current]
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["type"] == "urn:platform-service:problem:service-not-found"


async def test_services_need_a_token_with_tenants_read_and_a_valid_name(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    name = service_name()
    paths = ("/api/services", f"/api/services/{name}/versions")
    writer = {"Authorization": f"Bearer {token_for(keys_dir, 'wendy', WRITE_SCOPE)}"}
    with serve(create_app(make_settings((name, backend[1])))) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as api:
            anonymous = [await api.get(path) for path in paths]
            refused = [await api.get(path, headers=writer) for path in paths]
            api.headers["Authorization"] = f"Bearer {token_for(keys_dir, 'rita', READ_SCOPE)}"
            allowed = [await api.get(path) for path in paths]
            malformed = await api.get("/api/services/Bad_Name/versions")
            schema = (await api.get("/openapi.json")).json()

    assert [a.status_code for a in anonymous] == [401, 401]
    assert [r.status_code for r in refused] == [403, 403]
    assert all(r.json()["requiredScope"] == READ_SCOPE for r in refused)
    assert [a.status_code for a in allowed] == [200, 200]
    assert allowed[0].json() == {"items": [allowed[1].json()]}
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "name"
    spread = schema["components"]["schemas"]["ServiceVersionSpread"]
    assert set(spread["properties"]) == {"service", "versions", "failed", "minVersion", "tenants"}
    assert {"401", "403", "404", "422"} <= set(
        schema["paths"]["/api/services/{name}/versions"]["get"]["responses"]
    )
