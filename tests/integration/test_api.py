"""The REST API end to end: uvicorn, a real worker, Temporal, PostgreSQL and real downstream
services (the reference service with its real migrations, or a scripted one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from temporalio.client import Client

from api.auth import READ_SCOPE, WRITE_SCOPE
from api.main import create_app
from devstack.tokens import mint
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tests.conftest import running_worker, unique_id, with_database
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


OPERATOR = "operator"


def token_for(keys_dir: Path, subject: str = OPERATOR, *scopes: str, **options: Any) -> str:
    """A token of the test identity provider (`keys_dir/idp.pem`, which the API trusts);
    an operator's (read and write) unless scopes are given."""
    return mint(
        keys_dir / "idp.pem",
        subject=subject,
        scopes=scopes or (WRITE_SCOPE, READ_SCOPE),
        audience="platform-service",
        **options,
    )


@asynccontextmanager
async def api_stack(
    client: Client, settings: Settings, token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Worker + API under uvicorn; yields an HTTP client of the API, sending `token` if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with running_worker(client, settings):
        with serve(create_app(settings)) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http:
                yield http


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    reference_services: list[tuple[str, str]],
    keys_dir: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(*reference_services)
    async with api_stack(temporal_client, settings, token_for(keys_dir)) as http:
        yield http


def body(tenant_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": tenant_id,
        "name": "Acme Corp",
        "storageMode": "SCHEMA",
        "slaTier": "PREMIUM",
    } | overrides


async def wait_status(api: httpx.AsyncClient, tenant_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda t: t.get("status") == status)


def tables_in(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def count_tenant_storage(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant%'"
        ).fetchone()
        dbs = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tenant%'"
        ).fetchone()
    assert schemas is not None
    assert dbs is not None
    return schemas[0], dbs[0]


async def test_provision_through_the_api_reaches_active_with_both_services_tables(
    api: httpx.AsyncClient, storage_db_url: str
) -> None:
    tenant_id = unique_id("acme")
    created = await api.post("/api/tenants", json=body(tenant_id))
    assert created.status_code == 202, created.text
    assert created.headers["location"] == f"/api/tenants/{tenant_id}"
    assert created.json()["id"] == tenant_id
    assert created.json()["workflowId"] == provision_workflow_id(tenant_id)
    assert created.json()["createdBy"] == OPERATOR
    # The row exists before the 202 is sent.
    immediately = await api.get(f"/api/tenants/{tenant_id}")
    assert immediately.status_code == 200

    tenant = await wait_status(api, tenant_id, "ACTIVE")
    assert tenant["jdbcUrl"].endswith(f"?currentSchema=tenant_{tenant_id}")
    assert "password" not in tenant["jdbcUrl"]
    assert set(tenant["lastMigrationVersion"]) == {"backend-service", "auth-service"}
    assert {m["status"] for m in tenant["migrations"]} == {"SUCCEEDED"}
    tables = tables_in(storage_db_url, f"tenant_{tenant_id}")
    assert {"accounts", "projects", "users"} <= tables, tables


async def test_database_mode_creates_a_database_migrated_by_both_services(
    api: httpx.AsyncClient, pg_server_url: str
) -> None:
    tenant_id = unique_id("dbmode")
    created = await api.post("/api/tenants", json=body(tenant_id, storageMode="DATABASE"))
    assert created.status_code == 202, created.text
    tenant = await wait_status(api, tenant_id, "ACTIVE")
    assert tenant["jdbcUrl"].endswith(f"/tenant_{tenant_id}")
    tables = tables_in(with_database(pg_server_url, f"tenant_{tenant_id}"), "public")
    assert {"accounts", "projects", "users"} <= tables, tables


async def test_duplicate_id_gets_409(api: httpx.AsyncClient) -> None:
    tenant_id = unique_id("dup")
    assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
    again = await api.post("/api/tenants", json=body(tenant_id, name="Other"))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert (await api.get(f"/api/tenants/{tenant_id}")).json()["name"] == "Acme Corp"


async def test_twenty_racing_creates_give_one_202_one_row_one_workflow(
    api: httpx.AsyncClient, temporal_client: Client, platform_db_url: str
) -> None:
    tenant_id = unique_id("race")
    answers = await asyncio.gather(
        *(api.post("/api/tenants", json=body(tenant_id)) for _ in range(20))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] + [409] * 19
    with psycopg.connect(platform_db_url) as conn:
        row = conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    assert row == (1,)
    count = await eventually(
        lambda: temporal_client.count_workflows(
            f"WorkflowId = '{provision_workflow_id(tenant_id)}'"
        ),
        lambda c: c.count >= 1,
    )
    assert count.count == 1


@pytest.mark.parametrize(
    "bad_id",
    [
        "x'); DROP TABLE tenants; --",
        'acme"; DROP SCHEMA public CASCADE; --',
        "acme corp",
        "Acme",
        "ab",
        "a" * 41,
        "1acme",
        "_acme",
        "acme-corp",
        "acmé",
        "",
    ],
)
async def test_bad_ids_get_422_naming_the_field_and_create_nothing(
    api: httpx.AsyncClient, platform_db_url: str, storage_db_url: str, bad_id: str
) -> None:
    storage_before = count_tenant_storage(storage_db_url)
    with psycopg.connect(platform_db_url) as conn:
        before = conn.execute("SELECT count(*) FROM tenants").fetchone()
    answer = await api.post("/api/tenants", json=body(bad_id))
    assert answer.status_code == 422
    problem = answer.json()
    assert [e["field"] for e in problem["errors"]] == ["id"]
    assert "id" in problem["detail"]
    with psycopg.connect(platform_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == before
    assert count_tenant_storage(storage_db_url) == storage_before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body("okname", name="   "), "name"),
        (body("okname", name="a\u0000b"), "name"),
        (body("okname", name="x" * 201), "name"),
        (body("okname", storageMode="FILES"), "storageMode"),
        (body("okname", slaTier="GOLD"), "slaTier"),
        (body("okname", extra="field"), "extra"),
        ({"id": "okname", "name": "Acme", "storageMode": "SCHEMA"}, "slaTier"),
    ],
)
async def test_invalid_fields_get_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    answer = await api.post("/api/tenants", json=payload)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert (await api.get("/api/tenants/okname")).status_code == 404


async def test_get_unknown_tenant_is_404_and_bad_id_in_path_is_422(api: httpx.AsyncClient) -> None:
    missing = await api.get(f"/api/tenants/{unique_id('nope')}")
    assert missing.status_code == 404
    assert missing.json()["status"] == 404
    assert (await api.get("/api/tenants/NOT-VALID")).status_code == 422


async def test_list_pages_oldest_first_and_filters(api: httpx.AsyncClient) -> None:
    ids = [unique_id("page") for _ in range(3)]
    for tenant_id in ids:
        assert (
            await api.post("/api/tenants", json=body(tenant_id, slaTier="BASIC"))
        ).status_code == 202
    for tenant_id in ids:
        await wait_status(api, tenant_id, "ACTIVE")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, "slaTier": "BASIC", "status": "ACTIVE"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/tenants", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        assert all(t["slaTier"] == "BASIC" and t["status"] == "ACTIVE" for t in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    mine = [s for s in seen if s in ids]
    assert mine == ids

    for params in ({"limit": 0}, {"limit": 101}, {"status": "DONE"}, {"cursor": "garbage!"}):
        assert (await api.get("/api/tenants", params=params)).status_code == 422, params


async def test_retry_of_an_active_tenant_is_409_and_of_an_unknown_one_404(
    api: httpx.AsyncClient,
) -> None:
    tenant_id = unique_id("noretry")
    assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
    await wait_status(api, tenant_id, "ACTIVE")
    # The workflow has completed: its id still cannot be provisioned again.
    assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 409
    conflict = await api.post(f"/api/tenants/{tenant_id}/retry-migration")
    assert conflict.status_code == 409
    assert conflict.json()["tenantStatus"] == "ACTIVE"
    assert (await api.post(f"/api/tenants/{unique_id('ghost')}/retry-migration")).status_code == 404


async def test_failed_migration_is_retried_through_the_api(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    flaky = ScriptedService(version="7")
    with serve(flaky.app()) as url:
        settings = make_settings(("flaky-service", url))
        async with api_stack(temporal_client, settings, token_for(keys_dir)) as api:
            tenant_id = unique_id("retry")
            flaky.script(tenant_id, 422, 200)
            assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
            failed = await wait_status(api, tenant_id, "MIGRATION_ERROR")
            assert failed["migrations"][0]["lastError"].startswith("HTTP 422")

            retried = await api.post(f"/api/tenants/{tenant_id}/retry-migration")
            assert retried.status_code == 202
            active = await wait_status(api, tenant_id, "ACTIVE")
    assert active["lastMigrationVersion"] == {"flaky-service": "7"}
    assert len(flaky.calls_for(tenant_id)) == 2


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json()["status"] == "ok"
    # No relay runs here (events backend `none`): this tenant's events stay in the outbox.
    tenant_id = unique_id("ready")
    assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
    await wait_status(api, tenant_id, "ACTIVE")
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgresql": "ok", "temporal": "ok"}
    # The events' lag is shown, and a backlog does not make the API unready.
    assert ready.json()["events"]["backlog"] >= 1
    assert ready.json()["events"]["oldestSeconds"] > 0
    docs = await api.get("/docs")
    assert docs.status_code == 200


async def test_every_tenant_call_needs_the_token(api: httpx.AsyncClient) -> None:
    del api.headers["Authorization"]
    assert (await api.post("/api/tenants", json=body(unique_id("anon")))).status_code == 401
    assert (await api.get("/api/tenants")).status_code == 401
