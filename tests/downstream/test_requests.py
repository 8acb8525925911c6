"""Request handling of the migrate endpoint: headers, validation, error statuses (in-process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.downstream.helpers import (
    Payload,
    app_client,
    database_payload,
    headers,
    migrate_path,
    schema_payload,
    settings_for,
    tables_in,
)

INJECTION = '"; drop table canary; --'


async def test_healthz_names_the_service(pg_server_url: str) -> None:
    async with app_client(settings_for(pg_server_url, service_name="auth-service")) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "auth-service"}


@pytest.mark.parametrize("key", [None, "", "   "])
async def test_missing_idempotency_key_is_400_and_migrates_nothing(
    backend_client: httpx.AsyncClient,
    schema_tenant: Payload,
    pg_server_url: str,
    key: str | None,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    request_headers = {} if key is None else {"Idempotency-Key": key}
    response = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=request_headers
    )
    assert response.status_code == 400
    assert response.json()["code"] == "missing_idempotency_key"
    assert tables_in(pg_server_url, "postgres", schema_tenant["schema"]) == set()


def _with(payload: Payload, **changes: Any) -> Payload:
    return {**payload, **changes}


def _without(payload: Payload, field: str) -> Payload:
    return {key: value for key, value in payload.items() if key != field}


# Each case: (body built from a valid body and the tenant id, the field the 422 must name).
BAD_BODIES: dict[str, tuple[Callable[[Payload, str], Payload], str]] = {
    "uppercase tenantId": (lambda p, t: _with(p, tenantId=t.upper()), "tenantId"),
    "injection in tenantId": (lambda p, t: _with(p, tenantId=t + INJECTION), "tenantId"),
    "tenantId other than the path's": (
        lambda p, t: _with(p, tenantId=t + "x", schema=f"tenant_{t}x"),
        "tenantId",
    ),
    "unknown storageMode": (lambda p, t: _with(p, storageMode="FILES"), "storageMode"),
    "schema of another tenant": (lambda p, t: _with(p, schema=f"tenant_{t}x"), "schema"),
    "injection in schema": (lambda p, t: _with(p, schema=f"tenant_{t}{INJECTION}"), "schema"),
    "public schema in SCHEMA mode": (lambda p, t: _with(p, schema="public"), "schema"),
    "invalid database name": (lambda p, t: _with(p, database="Not-A-Db"), "database"),
    "injection in database": (lambda p, t: _with(p, database="postgres" + INJECTION), "database"),
    "missing jdbcUrl": (lambda p, t: _without(p, "jdbcUrl"), "jdbcUrl"),
    "jdbcUrl with a password": (
        lambda p, t: _with(p, jdbcUrl=p["jdbcUrl"] + "&password=secret"),
        "jdbcUrl",
    ),
    "jdbcUrl of another kind": (lambda p, t: _with(p, jdbcUrl="mysql://h/db"), "jdbcUrl"),
    "tenantId as a number": (lambda p, t: _with(p, tenantId=123), "tenantId"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
async def test_invalid_body_is_422_naming_the_field_and_creates_nothing(
    backend_client: httpx.AsyncClient,
    schema_tenant: Payload,
    admin: psycopg.Connection[Any],
    pg_server_url: str,
    case: str,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    schema = schema_tenant["schema"]
    admin.execute(sql.SQL("CREATE TABLE {}.canary (id int)").format(sql.Identifier(schema)))
    build, field = BAD_BODIES[case]

    response = await backend_client.post(
        migrate_path(tenant_id), json=build(schema_tenant, tenant_id), headers=headers()
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert [error["field"] for error in body["errors"]] == [field]
    # The migrator never ran: no yoyo tables, the canary survived, no stray schema or database.
    assert tables_in(pg_server_url, "postgres", schema) == {"canary"}
    schemas = admin.execute(
        "SELECT nspname FROM pg_namespace WHERE strpos(nspname, %s) > 0", (tenant_id,)
    ).fetchall()
    assert schemas == [(schema,)]
    databases = admin.execute(
        "SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0", (tenant_id,)
    ).fetchall()
    assert databases == []


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("schema other than public", "schema"),
        ("database other than the tenant's", "database"),
    ],
)
async def test_database_mode_requires_its_own_names(
    backend_client: httpx.AsyncClient, tenant_id: str, case: str, field: str
) -> None:
    payload = database_payload(tenant_id)
    payload[field] = f"tenant_{tenant_id}" if field == "schema" else "postgres"
    response = await backend_client.post(migrate_path(tenant_id), json=payload, headers=headers())
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


@pytest.mark.parametrize("path_id", ['x"; drop table canary', "AB", "a" * 41, "1abc"])
async def test_invalid_path_id_is_422(backend_client: httpx.AsyncClient, path_id: str) -> None:
    response = await backend_client.post(
        migrate_path(path_id), json=schema_payload("abc"), headers=headers()
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["location"], error["field"]) == ("path", "tenant_id")


async def test_unknown_fields_are_accepted(
    backend_client: httpx.AsyncClient, schema_tenant: Payload
) -> None:
    body = {**schema_tenant, "slaTier": "PREMIUM", "futureField": {"nested": True}}
    response = await backend_client.post(
        migrate_path(schema_tenant["tenantId"]), json=body, headers=headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "backend_0002_project_archiving"


async def test_missing_schema_is_409(backend_client: httpx.AsyncClient, tenant_id: str) -> None:
    response = await backend_client.post(
        migrate_path(tenant_id), json=schema_payload(tenant_id), headers=headers()
    )
    assert response.status_code == 409
    assert response.json()["code"] == "target_missing"
    assert f"tenant_{tenant_id}" in response.json()["detail"]


async def test_missing_database_is_409(backend_client: httpx.AsyncClient, tenant_id: str) -> None:
    response = await backend_client.post(
        migrate_path(tenant_id), json=database_payload(tenant_id), headers=headers()
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "target_missing",
        "detail": f"database 'tenant_{tenant_id}' does not exist",
    }


async def test_unreachable_postgres_is_503(tenant_id: str) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    settings = settings_for("postgresql://postgres@127.0.0.1:1/postgres")
    async with app_client(settings) as client:
        response = await client.post(
            migrate_path(tenant_id), json=schema_payload(tenant_id), headers=headers()
        )
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert "Traceback" not in response.text


async def test_unset_database_url_is_503(tenant_id: str) -> None:
    async with app_client(settings_for(None)) as client:
        response = await client.post(
            migrate_path(tenant_id), json=schema_payload(tenant_id), headers=headers()
        )
    assert response.status_code == 503
    assert response.json() == {
        "code": "not_configured",
        "detail": "DOWNSTREAM_DATABASE_URL is not set",
    }
