"""RFC 9457 problem bodies, request-validation mapping and the opaque list cursor."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout

from api import cursor
from api.errors import (
    PROBLEM_JSON,
    ApiError,
    Forbidden,
    InvalidRequest,
    ServiceUnavailable,
    StatusConflict,
    TenantConflict,
    TenantNotFound,
    Unauthorized,
    bearer_challenge,
    install_error_handlers,
    validation_problem,
)
from infra.db.paging import PagePosition
from tenancy.models import TenantSpec

T = "2024-05-01T12:30:00+00:00"
RFC_9457_KEYS = {"type", "title", "status", "detail", "instance"}
ERRORS = [
    (ApiError, 500),
    (Unauthorized, 401),
    (InvalidRequest, 422),
    (TenantNotFound, 404),
    (TenantConflict, 409),
    (StatusConflict, 409),
    (ServiceUnavailable, 503),
]


@pytest.mark.parametrize(("error_class", "status"), ERRORS, ids=lambda e: getattr(e, "__name__", e))
def test_problem_shape(error_class: type[ApiError], status: int) -> None:
    error = error_class("something specific happened")

    body = error.problem("/api/tenants/acme")

    assert set(body) == RFC_9457_KEYS
    assert body["status"] == error.status == status
    assert body["title"] == error_class.title
    assert body["detail"] == "something specific happened"
    assert body["instance"] == "/api/tenants/acme"
    assert re.fullmatch(r"urn:platform-service:problem:[a-z-]+", body["type"])
    assert json.loads(json.dumps(body)) == body


def test_problem_carries_extensions() -> None:
    error = TenantConflict(
        "tenant 'acme' exists", tenantId="acme", workflowId="tenant-provision-acme"
    )

    body = error.problem("/api/tenants")

    assert set(body) == RFC_9457_KEYS | {"tenantId", "workflowId"}
    assert body["tenantId"] == "acme"
    assert body["workflowId"] == "tenant-provision-acme"
    assert body["status"] == 409


def test_problem_types_and_titles_are_distinct() -> None:
    errors = [error_class("x") for error_class, _ in ERRORS] + [Forbidden("x", scope="s")]
    types = {error.problem("/")["type"] for error in errors}
    titles = {type(error).title for error in errors}

    assert len(types) == len(titles) == len(errors)


def test_bearer_challenge_quotes_parameters_in_order() -> None:
    assert bearer_challenge() == 'Bearer realm="platform-service"'
    assert bearer_challenge(error="insufficient_scope", scope="tenants:write") == (
        'Bearer realm="platform-service", error="insufficient_scope", scope="tenants:write"'
    )


def test_bearer_challenge_drops_characters_a_quoted_value_cannot_hold() -> None:
    challenge = bearer_challenge(error_description='say "hi"\\ \r\nInjected: 1 caf\u00e9')

    assert (
        challenge == 'Bearer realm="platform-service", error_description="say hi Injected: 1 caf"'
    )


def test_unauthorized_without_a_token_has_the_bare_challenge() -> None:
    error = Unauthorized("a bearer token is required", token_presented=False)

    assert error.status == 401
    assert error.headers == {"WWW-Authenticate": 'Bearer realm="platform-service"'}


def test_unauthorized_with_a_token_says_invalid_token_and_why() -> None:
    error = Unauthorized("the token has expired")

    assert error.headers == {
        "WWW-Authenticate": 'Bearer realm="platform-service", error="invalid_token", '
        'error_description="the token has expired"'
    }


def test_forbidden_names_the_missing_scope() -> None:
    error = Forbidden("needs tenants:write", scope="tenants:write")

    assert error.status == 403
    assert error.headers["WWW-Authenticate"] == (
        'Bearer realm="platform-service", error="insufficient_scope", scope="tenants:write"'
    )
    assert error.problem("/x")["requiredScope"] == "tenants:write"
    assert error.problem("/x")["type"] == "urn:platform-service:problem:insufficient-scope"


def test_errors_have_no_headers_unless_given() -> None:
    assert TenantNotFound("x").headers == {}
    assert ServiceUnavailable("x", headers={"Retry-After": "5"}).headers == {"Retry-After": "5"}
    assert "headers" not in ServiceUnavailable("x", headers={"Retry-After": "5"}).problem("/")


def test_every_error_is_an_api_error_and_keeps_its_message() -> None:
    for error_class, _ in ERRORS:
        error = error_class("detail text")
        assert isinstance(error, ApiError)
        assert str(error) == "detail text"


def test_validation_problem_drops_the_location_prefix() -> None:
    exc = RequestValidationError(
        [
            {"loc": ("body", "storageMode"), "msg": "Input should be 'SCHEMA' or 'DATABASE'"},
            {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 100"},
            {"loc": ("path", "tenant_id"), "msg": "String should match pattern"},
            {"loc": ("body", "migrations", 0, "service"), "msg": "Field required"},
        ]
    )

    problem = validation_problem(exc)

    assert isinstance(problem, InvalidRequest)
    assert problem.status == 422
    assert problem.extensions["errors"] == [
        {"field": "storageMode", "message": "Input should be 'SCHEMA' or 'DATABASE'"},
        {"field": "limit", "message": "Input should be less than or equal to 100"},
        {"field": "tenant_id", "message": "String should match pattern"},
        {"field": "migrations.0.service", "message": "Field required"},
    ]
    assert problem.detail == (
        "invalid value for: limit, migrations.0.service, storageMode, tenant_id"
    )


def test_validation_problem_keeps_a_lone_location() -> None:
    problem = validation_problem(
        RequestValidationError([{"loc": ("body",), "msg": "Field required"}])
    )

    assert problem.extensions["errors"] == [{"field": "body", "message": "Field required"}]


def test_validation_problem_names_each_field_once() -> None:
    exc = RequestValidationError(
        [
            {"loc": ("body", "name"), "msg": "too short"},
            {"loc": ("body", "name"), "msg": "not printable"},
        ]
    )

    problem = validation_problem(exc)

    assert problem.detail == "invalid value for: name"
    assert len(problem.extensions["errors"]) == 2


def test_unparseable_json_is_a_400_naming_the_byte_not_a_field() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 17),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting value"},
            }
        ]
    )

    problem = validation_problem(exc)

    assert problem.status == 400
    assert problem.detail == "the body is not valid JSON: Expecting value at byte 17"
    assert problem.extensions == {"position": 17}
    assert "errors" not in problem.problem("/")


def test_the_position_of_unparseable_json_is_a_byte_offset() -> None:
    """The parser counts characters: the x is character 11 and byte 14 (é and € take 5)."""
    exc = RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 11),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting ',' delimiter"},
            }
        ],
        body='{"n": "é€" x}',
    )

    problem = validation_problem(exc)

    assert problem.extensions == {"position": 14}
    assert problem.detail.endswith("at byte 14")


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/tenants")
    async def create(spec: TenantSpec) -> dict[str, str]:
        return {"id": spec.id}

    @app.get("/tenants")
    async def page(limit: Annotated[int, Query(ge=1, le=100)] = 50) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/tenants/{tenant_id}")
    async def missing(tenant_id: str) -> None:
        raise TenantNotFound(f"no tenant {tenant_id!r}", tenantId=tenant_id)

    @app.get("/db-down")
    async def db_down() -> None:
        raise psycopg.OperationalError("connection to server at 10.0.0.1 failed: password=secret")

    @app.get("/pool-exhausted")
    async def pool_exhausted() -> None:
        raise PoolTimeout("couldn't get a connection after 5.00 sec")

    @app.get("/no-token")
    async def no_token() -> None:
        raise Unauthorized("a bearer token is required", token_presented=False)

    @app.get("/bad-token")
    async def bad_token() -> None:
        raise Unauthorized("the token has expired")

    @app.get("/read-only")
    async def read_only() -> None:
        raise Forbidden("this operation needs the tenants:write scope", scope="tenants:write")

    @app.get("/retry-later")
    async def retry_later() -> None:
        raise ServiceUnavailable("busy", headers={"Retry-After": "5"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 leaked into an exception")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # In-process ASGI: no server, no socket. Starlette re-raises unhandled errors after
    # responding, so let the transport hand back the 500 instead.
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.mark.parametrize("path", ["/db-down", "/pool-exhausted"])
async def test_lost_database_is_a_503_problem_without_details(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["detail"] == "the metadata database is unavailable"
    assert "secret" not in response.text


def fields_of(response: httpx.Response) -> set[str]:
    return {error["field"] for error in response.json()["errors"]}


async def test_invalid_body_is_a_422_problem_naming_fields(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {
        "id": "Bad-Id",
        "name": "Acme",
        "storageMode": "TABLE",
        "slaTier": "BASIC",
        "extra": 1,
    }

    response = await client.post("/tenants", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert set(problem) >= RFC_9457_KEYS
    assert problem["status"] == 422
    assert problem["instance"] == "/tenants"
    assert fields_of(response) == {"id", "storageMode", "extra"}
    assert problem["detail"] == "invalid value for: extra, id, storageMode"


async def test_invalid_query_is_a_422_naming_the_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get("/tenants", params={"limit": "101"})

    assert response.status_code == 422
    assert fields_of(response) == {"limit"}


async def test_valid_request_passes(client: httpx.AsyncClient) -> None:
    body = {"id": "acme", "name": " Acme ", "storageMode": "SCHEMA", "slaTier": "BASIC"}

    response = await client.post("/tenants", json=body)

    assert response.status_code == 200
    assert response.json() == {"id": "acme"}


async def test_api_error_is_rendered_with_its_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/tenants/ghost")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:platform-service:problem:tenant-not-found",
        "title": "Tenant not found",
        "status": 404,
        "detail": "no tenant 'ghost'",
        "instance": "/tenants/ghost",
        "tenantId": "ghost",
    }


@pytest.mark.parametrize(
    ("path", "status", "challenge"),
    [
        ("/no-token", 401, 'Bearer realm="platform-service"'),
        (
            "/bad-token",
            401,
            'Bearer realm="platform-service", error="invalid_token", '
            'error_description="the token has expired"',
        ),
        (
            "/read-only",
            403,
            'Bearer realm="platform-service", error="insufficient_scope", scope="tenants:write"',
        ),
    ],
)
async def test_auth_errors_are_problems_with_a_bearer_challenge(
    client: httpx.AsyncClient, path: str, status: int, challenge: str
) -> None:
    response = await client.get(path)

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"] == challenge
    assert response.json()["status"] == status
    assert response.json()["instance"] == path


async def test_error_headers_reach_the_response(client: httpx.AsyncClient) -> None:
    response = await client.get("/retry-later")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_unexpected_error_is_a_500_problem_without_internals(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 500
    assert "hunter2" not in response.text
    assert any("unhandled error on GET /boom" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("insert_xid", "created_at", "tenant_id"),
    [
        (3, datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "acme"),
        (2**64 - 1, datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC), "a" * 40),
        (7, datetime(2024, 5, 1, 18, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))), "b_2"),
        (0, datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-8))), "zzz"),
    ],
)
def test_cursor_round_trips(insert_xid: int, created_at: datetime, tenant_id: str) -> None:
    position = PagePosition(insert_xid=insert_xid, created_at=created_at, tenant_id=tenant_id)
    token = cursor.encode(position)

    assert cursor.decode(token) == position
    assert cursor.decode(token).created_at.utcoffset() == created_at.utcoffset()
    # URL-safe and short enough for the route's `cursor` (max_length=200).
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) <= 200


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64_json(value: object) -> str:
    return b64(json.dumps(value).encode())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("!!!", id="not-base64"),
        pytest.param("", id="empty"),
        pytest.param("a", id="one-char"),
        pytest.param(b64(b"not json at all"), id="base64-of-text"),
        pytest.param(b64(b"\xff\xfe\xfd"), id="base64-of-binary"),
        pytest.param(b64_json(None), id="json-null"),
        pytest.param(b64_json(5), id="json-number"),
        pytest.param(b64_json("abc"), id="json-three-char-string"),
        pytest.param(b64_json({}), id="json-empty-object"),
        pytest.param(b64_json({"1": 1, T: 2, "acme": 3}), id="object-with-three-keys"),
        pytest.param(b64_json([]), id="json-empty-list"),
        pytest.param(b64_json([1, T]), id="json-two-items"),
        pytest.param(b64_json([1, T, "acme", 1]), id="json-four-items"),
        pytest.param(b64_json([1, "yesterday", "acme"]), id="json-bad-date"),
        pytest.param(b64_json([1, 1714566600, "acme"]), id="json-epoch-number"),
        pytest.param(b64_json([1, "2024-05-01T12:30:00", "acme"]), id="naive-datetime"),
        pytest.param(b64_json([1, T, "a\u0000b"]), id="nul-in-id"),
        pytest.param(b64_json([1, T, "Acme"]), id="id-not-a-tenant-id"),
        pytest.param(b64_json([1, T, "a" * 41]), id="id-too-long"),
        pytest.param(b64_json([1, T, None]), id="id-null"),
        pytest.param(b64_json([1, T, 5]), id="id-number"),
        pytest.param(b64_json([-1, T, "acme"]), id="negative-xid"),
        pytest.param(b64_json([2**64, T, "acme"]), id="xid-beyond-xid8"),
        pytest.param(b64_json([1.5, T, "acme"]), id="fractional-xid"),
        pytest.param(b64_json([True, T, "acme"]), id="boolean-xid"),
        pytest.param(b64_json(["1", T, "acme"]), id="xid-as-string"),
        pytest.param(b64_json(["1970-01-01T00:00:00+00:00", "a\u0000b"]), id="issue-9-probe"),
        pytest.param(b64(b"[" * 150), id="deeply-nested-within-200-chars"),
    ],
)
def test_garbage_cursor_is_invalid_request_naming_cursor(token: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        cursor.decode(token)

    error = caught.value
    assert error.status == 422
    assert error.detail == "invalid value for: cursor"
    assert [e["field"] for e in error.extensions["errors"]] == ["cursor"]


def test_an_old_two_item_cursor_is_refused() -> None:
    # Cursors before migration 0004 had no transaction id; they cannot be placed safely.
    with pytest.raises(InvalidRequest):
        cursor.decode(b64_json([T, "acme"]))
