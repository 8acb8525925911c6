"""Verifying with the platform's JWK Set, served by a real HTTP server: fetched lazily, cached,
refreshed for a rotated-in key, and a dropped key refused once the cache has been refreshed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.downstream.helpers import Payload, Storage, app_client, migrate_path, tables_in
from tests.downstream.test_auth import assert_unauthenticated, bearer
from tests.downstream.tokens import JwksServer, Kid, PlatformKey, resign
from tests.support.polling import eventually
from tests.support.servers import free_port, serve

JWKS_PATH = "/.well-known/jwks.json"


@pytest.fixture
def jwks(platform: PlatformKey) -> Iterator[tuple[JwksServer, str]]:
    """A JWKS server publishing `platform`'s key; yields it and its JWKS URL."""
    server = JwksServer(document={})
    server.publish(platform)
    with serve(server.app()) as base_url:
        yield server, base_url + JWKS_PATH


@pytest.fixture
def successor(tmp_path: Path) -> PlatformKey:
    """The key the platform rotates to."""
    return PlatformKey.generate(tmp_path, "successor")


@pytest.fixture
async def jwks_client(
    jwks: tuple[JwksServer, str], platform: PlatformKey, storage: Storage
) -> AsyncIterator[httpx.AsyncClient]:
    """backend-service verifying with the JWKS (5 min cache, 10 s refresh cooldown)."""
    settings = platform.settings(
        storage.service_url(), platform_public_key_file=None, platform_jwks_url=jwks[1]
    )
    async with app_client(settings) as client:
        yield client


async def _call(client: httpx.AsyncClient, payload: Payload, token: str) -> httpx.Response:
    return await client.post(migrate_path(payload["tenantId"]), json=payload, headers=bearer(token))


async def test_verifies_with_the_jwks_fetched_once_and_cached(
    jwks_client: httpx.AsyncClient,
    jwks: tuple[JwksServer, str],
    platform: PlatformKey,
    schema_tenant: Payload,
) -> None:
    server, _ = jwks
    assert server.fetches == 0, "the JWKS is fetched on the first call, not at start-up"
    tenant_id = schema_tenant["tenantId"]
    for _ in range(3):
        response = await _call(jwks_client, schema_tenant, platform.token(tenant_id))
        assert response.status_code == 200, response.text
    assert server.fetches == 1


@pytest.mark.parametrize("kid", ["stranger", "none"])
async def test_a_key_the_platform_does_not_publish_is_refused(
    jwks_client: httpx.AsyncClient,
    stranger: PlatformKey,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    kid: str,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    if kid == "stranger":
        token = resign(platform.token(tenant_id), stranger, kid=stranger.kid)
        detail = "token signed with a key the platform does not publish"
    else:
        token = resign(platform.token(tenant_id), platform, kid=Kid.NONE)
        detail = "token header has no kid"

    response = await _call(jwks_client, schema_tenant, token)

    assert_unauthenticated(response, service="backend-service", detail=detail)
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()


async def test_rotation_previous_key_verifies_while_published_then_is_refused(
    jwks: tuple[JwksServer, str],
    platform: PlatformKey,
    successor: PlatformKey,
    schema_tenant: Payload,
    database_tenant: Payload,
    storage: Storage,
) -> None:
    server, url = jwks
    server.publish(successor, platform)
    settings = successor.settings(
        storage.service_url(),
        platform_public_key_file=None,
        platform_jwks_url=url,
        jwks_cache_ttl=timedelta(milliseconds=200),
        jwks_refresh_cooldown=timedelta(0),
    )
    tenant_id = schema_tenant["tenantId"]
    async with app_client(settings) as client:
        previous = await _call(client, schema_tenant, platform.token(tenant_id))
        current = await _call(client, schema_tenant, successor.token(tenant_id))
        assert (previous.status_code, current.status_code) == (200, 200), previous.text

        server.publish(successor)  # the rotation is over: the previous key is withdrawn
        refused = await eventually(
            lambda: _call(client, schema_tenant, platform.token(tenant_id)),
            lambda response: response.status_code != 200,
            timeout=10,
        )
        assert_unauthenticated(
            refused,
            service="backend-service",
            detail="token signed with a key the platform does not publish",
        )
        # Refused outright now, and a tenant it reaches is left untouched.
        untouched = await _call(client, database_tenant, platform.token(tenant_id))
        assert untouched.status_code == 401
        assert tables_in(storage.superuser_url, database_tenant["database"], "public") == set()

        still_current = await _call(client, schema_tenant, successor.token(tenant_id))
        assert still_current.status_code == 200, still_current.text


async def test_a_rotated_in_key_is_fetched_at_once_and_refreshes_are_rate_limited(
    jwks_client: httpx.AsyncClient,
    jwks: tuple[JwksServer, str],
    platform: PlatformKey,
    successor: PlatformKey,
    stranger: PlatformKey,
    schema_tenant: Payload,
) -> None:
    server, _ = jwks
    tenant_id = schema_tenant["tenantId"]
    assert (await _call(jwks_client, schema_tenant, platform.token(tenant_id))).status_code == 200

    server.publish(successor, platform)
    # Well within the 5 min cache: the unknown kid forces one refresh, which finds the key.
    rotated = await _call(jwks_client, schema_tenant, successor.token(tenant_id))
    assert rotated.status_code == 200, rotated.text
    assert server.fetches == 2

    # Another unknown kid within the cooldown: no new fetch, and refused as unknown (401), so
    # a caller making up key ids cannot turn them into 5xx answers.
    unknown = resign(platform.token(tenant_id), stranger, kid=stranger.kid)
    for _ in range(3):
        response = await _call(jwks_client, schema_tenant, unknown)
        assert_unauthenticated(
            response,
            service="backend-service",
            detail="token signed with a key the platform does not publish "
            "(JWKS refreshed less than 10s ago)",
        )
    assert server.fetches == 2


async def test_an_unreachable_jwks_is_503_and_the_service_still_starts(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    url = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"
    settings = platform.settings(
        storage.service_url(), platform_public_key_file=None, platform_jwks_url=url
    )
    tenant_id = schema_tenant["tenantId"]
    async with app_client(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await _call(client, schema_tenant, platform.token(tenant_id))

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "urn:downstream-service:problem:platform_keys_unavailable",
        "title": "Platform keys unavailable",
        "status": 503,
        "detail": f"cannot fetch the platform JWKS from {url}",
        "instance": migrate_path(tenant_id),
        "code": "platform_keys_unavailable",
    }
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()


async def test_a_jwks_that_fails_at_first_is_fetched_again_later(
    jwks_client: httpx.AsyncClient,
    jwks: tuple[JwksServer, str],
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    server, _ = jwks
    server.failing = True  # the platform API is still starting
    tenant_id = schema_tenant["tenantId"]
    first = await _call(jwks_client, schema_tenant, platform.token(tenant_id))
    assert first.status_code == 503
    assert first.json()["code"] == "platform_keys_unavailable"
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()

    server.failing = False
    second = await _call(jwks_client, schema_tenant, platform.token(tenant_id))
    assert second.status_code == 200, second.text
