"""Bearer authentication and the audit trail through the real API: uvicorn, a worker, Temporal,
PostgreSQL and a scripted downstream service."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from temporalio.client import Client

from api.auth import READ_SCOPE, WRITE_SCOPE
from devstack.tokens import mint
from infra.security.keys import generate_private_key, load_public_key, public_jwk
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import api_stack, body, token_for, wait_status
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CHALLENGE = 'Bearer realm="platform-service"'
PROTECTED = [
    ("POST", "/api/tenants"),
    ("GET", "/api/tenants"),
    ("GET", "/api/tenants/{id}"),
    ("GET", "/api/tenants/{id}/events"),
    ("POST", "/api/tenants/{id}/retry-migration"),
]


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedService, str]]:
    service = ScriptedService(version="3")
    with serve(service.app()) as url:
        yield service, url


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    scripted: tuple[ScriptedService, str],
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with no token of its own: each request says who it is."""
    _, url = scripted
    async with api_stack(temporal_client, make_settings(("scripted-service", url))) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    api: httpx.AsyncClient,
    method: str,
    path: str,
    tenant_id: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    json_body = body(tenant_id) if path == "/api/tenants" and method == "POST" else None
    return await api.request(
        method, path.format(id=tenant_id), json=json_body, headers=headers or {}
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def hmac_with_public_key(keys_dir: Path) -> str:
    """An HS256 token whose secret is the identity provider's public key PEM."""
    public = load_public_key(keys_dir / "idp.pem")
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = json.loads(base64.urlsafe_b64decode(token_for(keys_dir).split(".")[1] + "==").decode())
    header = {"alg": "HS256", "typ": "JWT", "kid": public_jwk(public)["kid"]}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(signature)}"


def alg_none(keys_dir: Path) -> str:
    _, payload, _ = token_for(keys_dir).split(".")
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."


def bad_tokens(keys_dir: Path, tmp_path: Path) -> dict[str, str]:
    stranger = tmp_path / "stranger.pem"
    generate_private_key(stranger)
    return {
        "garbage": "not-a-jwt",
        "expired": token_for(keys_dir, ttl=timedelta(minutes=-5)),
        "wrong-audience": mint(
            keys_dir / "idp.pem",
            subject="operator",
            scopes=[WRITE_SCOPE, READ_SCOPE],
            audience="some-other-api",
        ),
        "alg-none": alg_none(keys_dir),
        "hs256-with-public-key": hmac_with_public_key(keys_dir),
        "another-key": mint(
            stranger,
            subject="operator",
            scopes=[WRITE_SCOPE, READ_SCOPE],
            audience="platform-service",
        ),
    }


async def test_no_token_gets_401_with_a_bearer_challenge_everywhere(
    api: httpx.AsyncClient, keys_dir: Path
) -> None:
    tenant_id = unique_id("anon")
    for method, path in PROTECTED:
        for headers in ({}, {"Authorization": "Basic b3BlcmF0b3I6c2VjcmV0"}):
            answer = await call(api, method, path, tenant_id, headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"] == CHALLENGE
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["status"] == 401
    # Authentication comes first: an anonymous caller learns nothing from validation errors.
    for answer in (
        await api.get("/api/tenants/NOT-VALID"),
        await api.post("/api/tenants", content=b"{not json", headers={"Content-Type": "x"}),
        await api.get("/api/tenants", params={"limit": 0}),
    ):
        assert answer.status_code == 401, answer.text
    missing = await api.get(f"/api/tenants/{tenant_id}", headers=bearer(token_for(keys_dir)))
    assert missing.status_code == 404


async def test_bad_tokens_get_401_invalid_token_and_change_nothing(
    api: httpx.AsyncClient, keys_dir: Path, tmp_path: Path
) -> None:
    tenant_id = unique_id("badtok")
    for name, token in bad_tokens(keys_dir, tmp_path).items():
        for method, path in PROTECTED:
            answer = await call(api, method, path, tenant_id, bearer(token))
            assert answer.status_code == 401, (name, method, path, answer.text)
            challenge = answer.headers["www-authenticate"]
            assert challenge.startswith(f'{CHALLENGE}, error="invalid_token", error_description=')
            assert token not in answer.text
            assert token not in challenge
    missing = await api.get(f"/api/tenants/{tenant_id}", headers=bearer(token_for(keys_dir)))
    assert missing.status_code == 404


async def test_expired_token_says_so(api: httpx.AsyncClient, keys_dir: Path) -> None:
    answer = await api.get(
        "/api/tenants", headers=bearer(token_for(keys_dir, ttl=timedelta(minutes=-5)))
    )

    assert answer.status_code == 401
    assert answer.json()["detail"] == "the token has expired"
    assert 'error_description="the token has expired"' in answer.headers["www-authenticate"]


async def test_scopes_decide_what_a_valid_token_may_do(
    api: httpx.AsyncClient, keys_dir: Path, scripted: tuple[ScriptedService, str]
) -> None:
    service, _ = scripted
    tenant_id = unique_id("scoped")
    service.script(tenant_id, 422, 200)
    operator = bearer(token_for(keys_dir))
    viewer = bearer(token_for(keys_dir, "viewer", READ_SCOPE))
    writer = bearer(token_for(keys_dir, "robot", WRITE_SCOPE))
    assert (await api.post("/api/tenants", json=body(tenant_id), headers=operator)).is_success
    api.headers.update(operator)
    await wait_status(api, tenant_id, "MIGRATION_ERROR")
    del api.headers["Authorization"]

    for method, path in [("POST", "/api/tenants"), *PROTECTED[-1:]]:
        denied = await call(api, method, path, unique_id("ro") if method == "POST" else tenant_id)
        assert denied.status_code == 401
        denied = await call(api, method, path, tenant_id, viewer)
        assert denied.status_code == 403, (method, path, denied.text)
        assert denied.headers["www-authenticate"] == (
            f'{CHALLENGE}, error="insufficient_scope", scope="tenants:write"'
        )
        assert denied.json()["requiredScope"] == "tenants:write"
        assert denied.headers["content-type"].startswith("application/problem+json")
    for method, path in PROTECTED[1:4]:
        allowed = await call(api, method, path, tenant_id, viewer)
        assert allowed.status_code == 200, (method, path, allowed.text)
        refused = await call(api, method, path, tenant_id, writer)
        assert refused.status_code == 403
        assert refused.headers["www-authenticate"].endswith('scope="tenants:read"')

    tenant = (await api.get(f"/api/tenants/{tenant_id}", headers=viewer)).json()
    assert tenant["status"] == "MIGRATION_ERROR", "a refused retry must not have run"
    assert len(service.calls_for(tenant_id)) == 1
    actions = [
        e["action"]
        for e in (await api.get(f"/api/tenants/{tenant_id}/events", headers=viewer)).json()["items"]
    ]
    assert "RETRY_REQUESTED" not in actions


async def test_open_endpoints_need_no_token(api: httpx.AsyncClient) -> None:
    open_paths = ("/healthz", "/readyz", "/docs", "/openapi.json", "/.well-known/jwks.json")
    for path in (*open_paths, "/metrics"):
        answer = await api.get(path)
        assert answer.status_code == 200, (path, answer.text)
    assert (await api.get("/.well-known/jwks.json")).json()["keys"]

    schema = (await api.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for method, path in PROTECTED:
        operation = schema["paths"][path.replace("{id}", "{tenant_id}")][method.lower()]
        assert operation["security"] == [{name: []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"])
    assert "security" not in schema["paths"]["/healthz"]["get"]
    # Offboarding is documented with its own scope and what each error means for it.
    delete = schema["paths"]["/api/tenants/{tenant_id}"]["delete"]["responses"]
    assert delete["409"]["description"] == (
        "A deletion is already scheduled, running or done, or a move is under way"
    )
    assert delete["422"]["description"] == "Invalid graceSeconds or reason"
    assert {"202", "401", "403", "404", "409", "422", "503"} <= set(delete)
    retry = schema["paths"]["/api/tenants/{tenant_id}/retry-migration"]["post"]["responses"]
    assert retry["422"]["description"].startswith("Invalid input")


def trail(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str | None]]:
    return [(e["action"], e["actor"], e["oldStatus"], e["newStatus"]) for e in events]


async def events_of(api: httpx.AsyncClient, tenant_id: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/api/tenants/{tenant_id}/events")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    ids = [e["id"] for e in items]
    assert ids == sorted(ids), "oldest first"
    assert all(e["tenantId"] == tenant_id for e in items)
    return items


async def test_provisioning_is_audited_with_the_token_subject(
    api: httpx.AsyncClient, keys_dir: Path
) -> None:
    tenant_id = unique_id("audit")
    workflow = f"workflow:{provision_workflow_id(tenant_id)}"
    api.headers.update(bearer(token_for(keys_dir, "alice", WRITE_SCOPE, READ_SCOPE)))

    created = await api.post("/api/tenants", json=body(tenant_id))
    assert created.status_code == 202, created.text
    assert created.json()["createdBy"] == "alice"
    tenant = await wait_status(api, tenant_id, "ACTIVE")
    assert tenant["createdBy"] == "alice"

    assert trail(await events_of(api, tenant_id)) == [
        ("CREATED", "alice", None, "PROVISIONING"),
        ("STATUS_CHANGED", workflow, "PROVISIONING", "MIGRATING"),
        ("STATUS_CHANGED", workflow, "MIGRATING", "ACTIVE"),
    ]
    assert (await api.get(f"/api/tenants/{unique_id('ghost')}/events")).status_code == 404
    assert (await api.get("/api/tenants/Not-An-Id/events")).status_code == 422


async def test_retry_through_the_api_is_audited_before_the_workflow_reruns(
    api: httpx.AsyncClient, keys_dir: Path, scripted: tuple[ScriptedService, str]
) -> None:
    service, _ = scripted
    tenant_id = unique_id("audretry")
    workflow = f"workflow:{provision_workflow_id(tenant_id)}"
    service.script(tenant_id, 422, 200)
    api.headers.update(bearer(token_for(keys_dir, "alice")))
    assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
    failed = await wait_status(api, tenant_id, "MIGRATION_ERROR")

    retried = await api.post(
        f"/api/tenants/{tenant_id}/retry-migration", headers=bearer(token_for(keys_dir, "bob"))
    )
    assert retried.status_code == 202, retried.text
    await wait_status(api, tenant_id, "ACTIVE")

    events = await events_of(api, tenant_id)
    assert trail(events) == [
        ("CREATED", "alice", None, "PROVISIONING"),
        ("STATUS_CHANGED", workflow, "PROVISIONING", "MIGRATING"),
        ("STATUS_CHANGED", workflow, "MIGRATING", "MIGRATION_ERROR"),
        ("RETRY_REQUESTED", "bob", None, None),
        ("STATUS_CHANGED", workflow, "MIGRATION_ERROR", "MIGRATING"),
        ("STATUS_CHANGED", workflow, "MIGRATING", "ACTIVE"),
    ]
    assert events[2]["reason"] == failed["statusReason"]
    assert len(service.calls_for(tenant_id)) == 2
