"""The migrate endpoint accepts only the platform's per-call tokens (key file; see test_jwks.py
for the JWK Set). Every rejection is a 401 problem with a `WWW-Authenticate` challenge whose
detail names the reason, and migrates nothing."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    history,
    migrate_path,
    rollback_all,
    tables_in,
)
from tests.downstream.tokens import (
    PlatformKey,
    claims_of,
    hs256,
    resign,
    unsigned,
    with_header,
    write_public_key,
)

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
HISTORY_TABLE = "backend_service_schema_history"
Headers = dict[str, str]


def bearer(token: str) -> Headers:
    """Headers of a call carrying `token`, with a fresh idempotency key."""
    return {"Idempotency-Key": secrets.token_hex(8), "Authorization": f"Bearer {token}"}


def assert_unauthenticated(
    response: httpx.Response, *, service: str, detail: str, token_given: bool = True
) -> None:
    """A 401 problem naming `detail`, with the RFC 6750 challenge of `service`."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "urn:downstream-service:problem:invalid_token",
        "title": "Unauthenticated platform call",
        "status": 401,
        "detail": detail,
        "instance": response.request.url.path,
        "code": "invalid_token",
    }
    challenge = f'Bearer realm="{service}"'
    if token_given:
        challenge += f', error="invalid_token", error_description="{detail}"'
    assert response.headers["www-authenticate"] == challenge
    sent = response.request.headers.get("Authorization", "").partition(" ")[2]
    if sent:
        assert sent not in response.text
        assert sent not in response.headers["www-authenticate"]


@dataclass(frozen=True)
class Case:
    """A call that must be refused: how its headers are built, and the detail it gets."""

    headers: Callable[[PlatformKey, PlatformKey, str], Headers]
    detail: str
    service: str = "backend-service"
    token_given: bool = True


def _now() -> int:
    return int(time.time())


def _spliced(signed: str, payload_from: str) -> str:
    """`signed`'s header and signature around the payload of `payload_from`."""
    header, _, signature = signed.split(".")
    return f"{header}.{payload_from.split('.')[1]}.{signature}"


CASES: dict[str, Case] = {
    "no Authorization header": Case(
        lambda p, s, t: {"Idempotency-Key": "k1"}, "missing bearer token", token_given=False
    ),
    "Basic credentials": Case(
        lambda p, s, t: {"Idempotency-Key": "k1", "Authorization": "Basic cGxhdGZvcm06eA=="},
        "missing bearer token",
        token_given=False,
    ),
    "empty bearer": Case(
        lambda p, s, t: {"Idempotency-Key": "k1", "Authorization": "Bearer "},
        "missing bearer token",
        token_given=False,
    ),
    "malformed token": Case(
        lambda p, s, t: bearer("not-a-jwt"),
        "malformed token (not a JWS compact serialization)",
    ),
    "token for backend-service sent to auth-service": Case(
        lambda p, s, t: p.headers(t, "backend-service"),
        "token audience does not match auth-service",
        service="auth-service",
    ),
    "expired": Case(
        lambda p, s, t: bearer(
            resign(p.token(t), p, iat=_now() - 900, nbf=_now() - 900, exp=_now() - 600)
        ),
        "token expired",
    ),
    "issued in the future": Case(
        lambda p, s, t: bearer(
            resign(p.token(t), p, iat=_now() + 600, nbf=_now() + 600, exp=_now() + 900)
        ),
        "token not valid yet (iat or nbf in the future)",
    ),
    "wrong issuer": Case(
        lambda p, s, t: bearer(resign(p.token(t), p, iss="someone-else")),
        "token issuer is not platform-service",
    ),
    "signed by another key": Case(
        lambda p, s, t: bearer(resign(p.token(t), s)),
        "token signature does not verify with the platform key",
    ),
    "payload changed after signing": Case(
        lambda p, s, t: bearer(_spliced(p.token(t + "x"), p.token(t))),
        "token signature does not verify with the platform key",
    ),
    "alg none": Case(
        lambda p, s, t: bearer(unsigned(p.token(t))),
        "token algorithm none not allowed; expected ES256 or RS256",
    ),
    "HS256 keyed with the public key PEM": Case(
        lambda p, s, t: bearer(hs256(p.token(t), p.public_file.read_bytes())),
        "token algorithm HS256 not allowed; expected ES256 or RS256",
    ),
    "alg missing": Case(
        lambda p, s, t: bearer(with_header(p.token(t), {"typ": "JWT", "kid": p.kid})),
        "token header has no alg",
    ),
    "alg not a string": Case(
        lambda p, s, t: bearer(with_header(p.token(t), {"alg": ["ES256"], "kid": p.kid})),
        "token header has no alg",
    ),
    "alg unheard of": Case(
        lambda p, s, t: bearer(with_header(p.token(t), {"alg": "ES256K" * 50, "kid": p.kid})),
        "token algorithm not allowed; expected ES256 or RS256",
    ),
    "kid not a string": Case(
        lambda p, s, t: bearer(with_header(p.token(t), {"alg": "ES256", "kid": 7})),
        "malformed token header (kid or crit)",
    ),
    "tenantId of another tenant": Case(
        lambda p, s, t: p.headers(t + "x"),
        "token tenantId does not match the tenant in the path",
    ),
    "no exp": Case(
        lambda p, s, t: bearer(resign(p.token(t), p, exp=None)), "token lacks the exp claim"
    ),
    "no jti": Case(
        lambda p, s, t: bearer(resign(p.token(t), p, jti=None)), "token lacks the jti claim"
    ),
    "no tenantId": Case(
        lambda p, s, t: bearer(resign(p.token(t), p, tenantId=None)),
        "token lacks the tenantId claim",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_refused_calls_are_401_problems_and_migrate_nothing(
    backend_client: httpx.AsyncClient,
    auth_client: httpx.AsyncClient,
    platform: PlatformKey,
    stranger: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    case: str,
) -> None:
    spec = CASES[case]
    tenant_id = schema_tenant["tenantId"]
    client = auth_client if spec.service == "auth-service" else backend_client

    response = await client.post(
        migrate_path(tenant_id),
        json=schema_tenant,
        headers=spec.headers(platform, stranger, tenant_id),
    )

    assert_unauthenticated(
        response, service=spec.service, detail=spec.detail, token_given=spec.token_given
    )
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()


async def test_a_replayed_token_is_refused_and_applies_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    tenant_id, schema = schema_tenant["tenantId"], schema_tenant["schema"]
    token = platform.token(tenant_id)
    first = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
    )
    assert first.status_code == 200, first.text
    assert first.json()["applied"] == BACKEND_VERSIONS
    # Undo the migrations, so a replay that got through would visibly apply them again.
    assert rollback_all(storage, schema_tenant) == BACKEND_VERSIONS[::-1]

    # Another idempotency key, as a replaying attacker would send: the token alone decides.
    replay = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
    )

    assert_unauthenticated(
        replay, service="backend-service", detail="token already used (jti replay)"
    )
    assert tables_in(storage.superuser_url, storage.database, schema) == {HISTORY_TABLE}
    assert history(storage.superuser_url, storage.database, schema) == []


async def test_a_token_replayed_after_a_restart_or_to_another_replica_is_refused(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    """Seen token ids live in the service's own database, not in one process's memory."""
    tenant_id, schema = schema_tenant["tenantId"], schema_tenant["schema"]
    token = platform.token(tenant_id)
    settings = platform.settings(storage.service_url())
    async with app_client(settings) as before_restart:
        first = await before_restart.post(
            migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
        )
    assert first.status_code == 200, first.text
    assert rollback_all(storage, schema_tenant) == BACKEND_VERSIONS[::-1]

    async with app_client(settings) as restarted, app_client(settings) as replica:
        for client in (restarted, replica):
            replay = await client.post(
                migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
            )
            assert_unauthenticated(
                replay, service="backend-service", detail="token already used (jti replay)"
            )
    assert tables_in(storage.superuser_url, storage.database, schema) == {HISTORY_TABLE}


async def test_a_refused_token_does_not_use_up_its_jti(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    tenant_id = schema_tenant["tenantId"]
    token = platform.token(tenant_id)
    elsewhere = await backend_client.post(
        migrate_path(tenant_id + "x"), json=schema_tenant, headers=bearer(token)
    )
    assert elsewhere.status_code == 401
    response = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
    )
    assert response.status_code == 200, response.text


async def test_the_token_is_checked_before_the_idempotency_key_and_the_body(
    backend_client: httpx.AsyncClient, tenant_id: str
) -> None:
    response = await backend_client.post(
        migrate_path(tenant_id), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_unauthenticated(
        response, service="backend-service", detail="missing bearer token", token_given=False
    )


async def test_small_clock_skew_is_tolerated(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    tenant_id = schema_tenant["tenantId"]
    now = _now()
    # The platform's clock 10 s ahead: iat and nbf in our future, within the 30 s leeway.
    token = resign(platform.token(tenant_id), platform, iat=now + 10, nbf=now + 10)
    response = await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
    )
    assert response.status_code == 200, response.text


async def test_a_private_key_file_verifies_with_its_public_half(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    tenant_id = schema_tenant["tenantId"]
    settings = platform.settings(
        storage.service_url(), platform_public_key_file=platform.private_file
    )
    async with app_client(settings) as client:
        response = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=platform.headers(tenant_id)
        )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def rsa_platform(tmp_path_factory: pytest.TempPathFactory) -> PlatformKey:
    """A platform that signs with RS256."""
    folder = Path(tmp_path_factory.mktemp("rsa-platform"))
    private = folder / "rsa.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return PlatformKey(private, write_public_key(private, folder / "rsa.pub.pem"))


async def test_rs256_with_an_rsa_key_and_no_algorithm_confusion(
    rsa_platform: PlatformKey,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    async with app_client(rsa_platform.settings(storage.service_url())) as client:
        es256 = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=platform.headers(tenant_id)
        )
        assert_unauthenticated(
            es256,
            service="backend-service",
            detail="token algorithm ES256 does not match its key",
        )
        assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()

        rs256 = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=rsa_platform.headers(tenant_id)
        )
    assert rs256.status_code == 200, rs256.text


async def test_tokens_never_reach_the_logs(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    tokens: list[str] = []
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        token = platform.token(tenant_id)
        tokens.append(token)
        for _ in range(2):  # accepted, then refused as a replay
            await backend_client.post(
                migrate_path(tenant_id), json=schema_tenant, headers=bearer(token)
            )
    wrong_audience = platform.token(tenant_id, "auth-service")
    tokens.append(wrong_audience)
    await backend_client.post(
        migrate_path(tenant_id), json=schema_tenant, headers=bearer(wrong_audience)
    )

    logged = caplog.text
    assert "token already used (jti replay)" in logged
    assert "token audience does not match backend-service" in logged
    for token in tokens:
        for part in token.split("."):
            assert part not in logged
    assert f"jti={claims_of(tokens[0])['jti']}" in logged
