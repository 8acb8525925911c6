"""Request handling of the migrate endpoint: headers, validation, error statuses (in-process).

Every error is an RFC 9457 problem; every call here carries a valid platform token, so what is
tested is what comes after authentication (see test_auth.py for the token itself).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from examples.downstream_service.models import StorageAddress, parse_jdbc_url
from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    database_payload,
    migrate_path,
    schema_payload,
    tables_in,
)
from tests.downstream.tokens import PlatformKey

INJECTION = '"; drop table canary; --'


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The RFC 9457 body of `response`, after checking its shape, status and type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:downstream-service:problem:{code}"
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["instance"] == response.request.url.path
    return body


async def test_healthz_names_the_service(auth_client: httpx.AsyncClient) -> None:
    response = await auth_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "auth-service"}


async def test_unknown_path_is_a_404_problem(backend_client: httpx.AsyncClient) -> None:
    response = await backend_client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/nowhere",
    }


@pytest.mark.parametrize("key", [None, "", "   "])
async def test_missing_idempotency_key_is_400_and_migrates_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    key: str | None,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    request_headers = {"Authorization": f"Bearer {platform.token(tenant_id)}"}
    if key is not None:
        request_headers["Idempotency-Key"] = key
    response = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=request_headers
    )
    body = problem(response, 400, "missing_idempotency_key")
    assert body["detail"] == "the Idempotency-Key header is required"
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()


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
    "jdbcUrl with a user": (
        lambda p, t: _with(p, jdbcUrl=p["jdbcUrl"].replace("//", "//someone@")),
        "jdbcUrl",
    ),
    "jdbcUrl with two hosts": (
        lambda p, t: _with(p, jdbcUrl=p["jdbcUrl"].replace("//", "//10.0.0.9:5432,")),
        "jdbcUrl",
    ),
    "jdbcUrl without a port": (
        lambda p, t: _with(p, jdbcUrl=f"jdbc:postgresql://db.internal/{p['database']}"),
        "jdbcUrl",
    ),
    "jdbcUrl with a port out of range": (
        lambda p, t: _with(p, jdbcUrl=f"jdbc:postgresql://db:70000/{p['database']}"),
        "jdbcUrl",
    ),
    "jdbcUrl with a bad IPv6 literal": (
        lambda p, t: _with(p, jdbcUrl=f"jdbc:postgresql://[::g]:5432/{p['database']}"),
        "jdbcUrl",
    ),
    "jdbcUrl with a newline": (
        lambda p, t: _with(p, jdbcUrl=p["jdbcUrl"].replace("//", "//evil\n")),
        "jdbcUrl",
    ),
    "jdbcUrl without a database": (
        lambda p, t: _with(p, jdbcUrl="jdbc:postgresql://db:5432/"),
        "jdbcUrl",
    ),
    "jdbcUrl naming another database": (
        lambda p, t: _with(p, jdbcUrl="jdbc:postgresql://db:5432/other_db"),
        "database",
    ),
    "tenantId as a number": (lambda p, t: _with(p, tenantId=123), "tenantId"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
async def test_invalid_body_is_422_naming_the_field_and_creates_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    admin: psycopg.Connection[Any],
    storage: Storage,
    case: str,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    schema = schema_tenant["schema"]
    admin.execute(sql.SQL("CREATE TABLE {}.canary (id int)").format(sql.Identifier(schema)))
    build, field = BAD_BODIES[case]

    response = await backend_client.post(
        migrate_path(tenant_id),
        json=build(schema_tenant, tenant_id),
        headers=platform.headers(tenant_id),
    )

    body = problem(response, 422, "invalid_request")
    assert [error["field"] for error in body["errors"]] == [field]
    assert field in body["detail"]
    assert set(body["errors"][0]) == {"field", "location", "message"}
    # The migrator never ran: no history table, the canary survived, no stray schema or database.
    assert tables_in(storage.superuser_url, storage.database, schema) == {"canary"}
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
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    storage: Storage,
    tenant_id: str,
    case: str,
    field: str,
) -> None:
    payload = database_payload(tenant_id, storage)
    payload[field] = f"tenant_{tenant_id}" if field == "schema" else storage.database
    response = await backend_client.post(
        migrate_path(tenant_id), json=payload, headers=platform.headers(tenant_id)
    )
    body = problem(response, 422, "invalid_request")
    assert [error["field"] for error in body["errors"]] == [field]


@pytest.mark.parametrize("path_id", ['x"; drop table canary', "AB", "a" * 41, "1abc"])
async def test_invalid_path_id_is_422(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage, path_id: str
) -> None:
    # Signed for that very id, so the token passes and the path validation is what answers.
    response = await backend_client.post(
        migrate_path(path_id),
        json=schema_payload("abc", storage),
        headers=platform.headers(path_id),
    )
    [error] = problem(response, 422, "invalid_request")["errors"]
    assert (error["location"], error["field"]) == ("path", "tenant_id")


async def test_unknown_fields_are_accepted(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    tenant_id = schema_tenant["tenantId"]
    body = {**schema_tenant, "slaTier": "PREMIUM", "futureField": {"nested": True}}
    response = await backend_client.post(
        migrate_path(tenant_id), json=body, headers=platform.headers(tenant_id)
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "backend_0002_project_archiving"


async def test_missing_schema_is_409(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage, tenant_id: str
) -> None:
    response = await backend_client.post(
        migrate_path(tenant_id),
        json=schema_payload(tenant_id, storage),
        headers=platform.headers(tenant_id),
    )
    body = problem(response, 409, "target_missing")
    assert f"tenant_{tenant_id}" in body["detail"]


async def test_missing_database_is_409(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage, tenant_id: str
) -> None:
    path = migrate_path(tenant_id)
    response = await backend_client.post(
        path, json=database_payload(tenant_id, storage), headers=platform.headers(tenant_id)
    )
    assert problem(response, 409, "target_missing") == {
        "type": "urn:downstream-service:problem:target_missing",
        "title": "Tenant storage missing",
        "status": 409,
        "detail": f"database 'tenant_{tenant_id}' does not exist",
        "instance": path,
        "code": "target_missing",
    }


async def test_unreachable_storage_is_503(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage, tenant_id: str
) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    response = await backend_client.post(
        migrate_path(tenant_id),
        json=schema_payload(tenant_id, storage, authority="127.0.0.1:1"),
        headers=platform.headers(tenant_id),
    )
    body = problem(response, 503, "storage_unavailable")
    assert body["detail"] == "PostgreSQL at 127.0.0.1:1 is unreachable"
    assert "Traceback" not in response.text


async def test_unreachable_own_database_is_503(
    platform: PlatformKey, storage: Storage, tenant_id: str
) -> None:
    """The service cannot record the token's id, so it cannot accept the call."""
    settings = platform.settings(
        "postgresql://postgres@127.0.0.1:1/backend", connect_timeout=timedelta(seconds=1)
    )
    async with app_client(settings) as client:
        response = await client.post(
            migrate_path(tenant_id),
            json=schema_payload(tenant_id, storage),
            headers=platform.headers(tenant_id),
        )
    body = problem(response, 503, "storage_unavailable")
    assert body["detail"] == "the service's own database is unavailable"


async def test_unset_database_url_is_503(
    platform: PlatformKey, storage: Storage, tenant_id: str
) -> None:
    async with app_client(platform.settings(None)) as client:
        response = await client.post(
            migrate_path(tenant_id),
            json=schema_payload(tenant_id, storage),
            headers=platform.headers(tenant_id),
        )
    body = problem(response, 503, "not_configured")
    assert body["detail"] == "DOWNSTREAM_DATABASE_URL is not set"


@pytest.mark.parametrize(
    ("jdbc_url", "address"),
    [
        (
            "jdbc:postgresql://db.internal:6432/tenants?currentSchema=tenant_x",
            ("db.internal", 6432),
        ),
        ("jdbc:postgresql://10.1.2.3:5432/tenants", ("10.1.2.3", 5432)),
        ("jdbc:postgresql://[::1]:5433/tenants", ("::1", 5433)),
        ("jdbc:postgresql://[2001:DB8::7]:5432/tenants", ("2001:db8::7", 5432)),
    ],
)
def test_jdbc_urls_the_platform_writes_parse(jdbc_url: str, address: tuple[str, int]) -> None:
    assert parse_jdbc_url(jdbc_url) == StorageAddress(*address, database="tenants")
