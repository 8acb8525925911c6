"""Every number a request carries is bounded to what the database holds, and every field takes
only the JSON type its OpenAPI schema says: hostile values are a 422 naming the field, never a
500 (and never a dropped connection), against the real API, PostgreSQL and Temporal.

The edges: a wave's `size` and every other count fit PostgreSQL's integer (2**31 - 1);
`concurrency` 1-256, `maxFailureRatio` 0-1, the tenant list's `limit` 1-100, a rollout's tenant
list `limit` 1-500 and its `cursor` 18 digits, `graceSeconds` 0 to a year, and a tenant-list
cursor's transaction id an xid8 (0 to 2**64 - 1).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from tenancy.settings import DownstreamService, Settings
from tests.support.api_client import api_client, fields_of, tenant_cursor

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

INT4_MAX = 2**31 - 1
BIGINT_PAST = 2**63
XID8_MAX = 2**64 - 1
YEAR_SECONDS = 366 * 24 * 3600
# Numbers past any integer column, as the probe sent them: a bigint overflow and a float.
HOSTILE_NUMBERS: tuple[Any, ...] = (BIGINT_PAST, 1e40, -BIGINT_PAST - 1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(
    platform_role_urls: tuple[str, str], temporal_client: Client, keys_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    platform_db_url, storage_db_url = platform_role_urls
    settings = Settings(
        database_url=platform_db_url,
        storage_database_url=storage_db_url,
        task_queue=f"bounds-{uuid.uuid4().hex[:8]}",
        temporal_address=temporal_client.service_client.config.target_host,
        signing_key_file=keys_dir / "platform-signing.pem",
        auth_public_key_file=keys_dir / "idp.pem",
        # Never called: every rollout here selects no tenant.
        downstream_services=(DownstreamService(name="backend-service", base_url="http://x"),),
        events_backend="none",
    )
    # One connection for the whole module: a 500 would drop it (the keep-alive the probe lost).
    async with api_client(settings, keys_dir) as http:
        yield http


def nobody() -> dict[str, Any]:
    """A rollout body selecting no tenant: valid ones end SUCCEEDED at once, with no run."""
    return {"selector": {"tenantIds": [f"nobody_{uuid.uuid4().hex[:8]}"]}}


def with_wave(**wave: Any) -> dict[str, Any]:
    return nobody() | {"waves": [{"name": "w1", **wave}]}


ROLLOUT_EDGES: list[Any] = [
    *(
        pytest.param(with_wave(size=size), status, id=f"size={size}")
        for size, status in ((1, 202), (INT4_MAX, 202), (0, 422), (INT4_MAX + 1, 422))
    ),
    *(pytest.param(with_wave(size=size), 422, id=f"size={size}") for size in HOSTILE_NUMBERS),
    *(
        pytest.param(nobody() | {"concurrency": value}, status, id=f"concurrency={value}")
        for value, status in ((1, 202), (256, 202), (0, 422), (257, 422))
    ),
    *(
        pytest.param(nobody() | {"concurrency": value}, 422, id=f"concurrency={value}")
        for value in HOSTILE_NUMBERS
    ),
    *(
        pytest.param(nobody() | {"maxFailureRatio": value}, status, id=f"ratio={value}")
        for value, status in ((0, 202), (1, 202), (1.0000001, 422), (-1e-9, 422), (1e40, 422))
    ),
]


@pytest.mark.parametrize(("body", "status"), ROLLOUT_EDGES)
async def test_rollout_numbers_are_bounded_at_their_edges(
    api: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    answer = await api.post("/api/rollouts", json=body)

    assert answer.status_code == status, answer.text
    if status == 422:
        named = fields_of(answer)
        assert named & {"waves.0.size", "concurrency", "maxFailureRatio"}, answer.text
    else:
        assert answer.json()["status"] == "SUCCEEDED"


QUERY_EDGES: list[Any] = [
    *(
        pytest.param("/api/tenants", {"limit": value}, status, "limit", id=f"limit={value}")
        for value, status in (
            (1, 200),
            (100, 200),
            (0, 422),
            (101, 422),
            (BIGINT_PAST, 422),
            ("1e40", 422),
        )
    ),
    *(
        pytest.param(
            "/api/tenants/nobody_here",
            {"graceSeconds": value},
            status,
            "graceSeconds",
            id=f"graceSeconds={value}",
        )
        # 404: the value passed, and the tenant was looked for.
        for value, status in (
            (0, 404),
            (YEAR_SECONDS, 404),
            (-1, 422),
            (YEAR_SECONDS + 1, 422),
            (BIGINT_PAST, 422),
            ("1e40", 422),
        )
    ),
    *(
        pytest.param(
            "/api/tenants",
            {"cursor": tenant_cursor(xid, created, "acme")},
            status,
            "cursor",
            id=f"cursor-xid={xid!r}-{created}",
        )
        for xid, created, status in (
            (0, "2024-05-01T12:00:00+00:00", 200),
            (XID8_MAX, "2024-05-01T12:00:00+00:00", 200),
            (1, "9999-12-31T23:59:59-14:00", 200),
            (1, "0001-01-01T00:00:00+14:00", 200),
            (XID8_MAX + 1, "2024-05-01T12:00:00+00:00", 422),
            (-1, "2024-05-01T12:00:00+00:00", 422),
            (1e40, "2024-05-01T12:00:00+00:00", 422),
        )
    ),
]


@pytest.mark.parametrize(("path", "params", "status", "field"), QUERY_EDGES)
async def test_query_numbers_are_bounded_at_their_edges(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], status: int, field: str
) -> None:
    method = "DELETE" if "graceSeconds" in params else "GET"

    answer = await api.request(method, path, params=params)

    assert answer.status_code == status, answer.text
    if status == 422:
        assert fields_of(answer) == {field}, answer.text


async def test_a_rollouts_tenant_list_is_bounded_at_its_edges(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/rollouts", json=nobody())
    assert created.status_code == 202, created.text
    path = f"/api/rollouts/{created.json()['id']}/tenants"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"limit": 1}, 200, ""),
        ({"limit": 500}, 200, ""),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 501}, 422, "limit"),
        ({"limit": BIGINT_PAST}, 422, "limit"),
        ({"cursor": "0"}, 200, ""),
        ({"cursor": "9" * 18}, 200, ""),
        ({"cursor": "9" * 19}, 422, "cursor"),
        ({"cursor": str(BIGINT_PAST)}, 422, "cursor"),
        ({"cursor": "-1"}, 422, "cursor"),
    ]

    answers = [
        (await api.get(path, params=params), status, field) for params, status, field in cases
    ]

    for answer, status, field in answers:
        assert answer.status_code == status, (answer.request.url, answer.text)
        if field:
            assert fields_of(answer) == {field}, answer.text


STRICT_ROLLOUT_BODIES: list[Any] = [
    pytest.param({"concurrency": "16"}, "concurrency", id="concurrency-string"),
    pytest.param({"concurrency": True}, "concurrency", id="concurrency-bool"),
    pytest.param({"concurrency": 16.0}, "concurrency", id="concurrency-float"),
    pytest.param({"pauseAfterEachWave": "yes"}, "pauseAfterEachWave", id="pause-yes"),
    pytest.param({"pauseAfterEachWave": "true"}, "pauseAfterEachWave", id="pause-string"),
    pytest.param({"pauseAfterEachWave": 1}, "pauseAfterEachWave", id="pause-number"),
    pytest.param({"waves": [{"name": "w", "size": 1.0}]}, "waves.0.size", id="size-float"),
    pytest.param({"waves": [{"name": "w", "size": "1"}]}, "waves.0.size", id="size-string"),
    pytest.param({"waves": [{"name": "w", "size": True}]}, "waves.0.size", id="size-bool"),
    pytest.param({"maxFailureRatio": "0.5"}, "maxFailureRatio", id="ratio-string"),
    pytest.param({"maxFailureRatio": True}, "maxFailureRatio", id="ratio-bool"),
    pytest.param({"services": ["backend-service", 1]}, "services.1", id="service-number"),
]


@pytest.mark.parametrize(("overrides", "field"), STRICT_ROLLOUT_BODIES)
async def test_a_rollout_body_takes_only_its_schema_types(
    api: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    answer = await api.post("/api/rollouts", json=nobody() | overrides)

    assert answer.status_code == 422, answer.text
    assert field in fields_of(answer), answer.text


async def test_a_valid_rollout_body_with_every_field_is_still_taken(
    api: httpx.AsyncClient,
) -> None:
    body = {
        "services": ["backend-service"],
        "selector": {
            "status": ["ACTIVE", "MIGRATION_ERROR"],
            "slaTier": ["BASIC", "PREMIUM"],
            "tenantIds": [f"nobody_{uuid.uuid4().hex[:8]}"],
        },
        "waves": [
            {"name": "canary", "size": 1, "slaTier": ["BASIC"]},
            {"name": "rest", "tenantIds": ["someone_else"]},
        ],
        "concurrency": 16,
        "maxFailureRatio": 0,
        "pauseAfterEachWave": True,
    }

    answer = await api.post("/api/rollouts", json=body)

    assert answer.status_code == 202, answer.text
    request = answer.json()["request"]
    assert request["concurrency"] == 16
    assert request["maxFailureRatio"] == 0.0
    assert request["pauseAfterEachWave"] is True
    assert request["selector"]["status"] == ["ACTIVE", "MIGRATION_ERROR"]
    assert [w["name"] for w in request["waves"]] == ["canary", "rest"]


STRICT_TENANT_BODIES: list[Any] = [
    pytest.param({"storageMode": 1}, "storageMode", id="storage-mode-number"),
    pytest.param({"storageMode": True}, "storageMode", id="storage-mode-bool"),
    pytest.param({"slaTier": True}, "slaTier", id="sla-tier-bool"),
    pytest.param({"slaTier": ["BASIC"]}, "slaTier", id="sla-tier-list"),
    pytest.param({"name": 123}, "name", id="name-number"),
    pytest.param({"name": True}, "name", id="name-bool"),
    pytest.param({"id": 123}, "id", id="id-number"),
]


@pytest.mark.parametrize(("overrides", "field"), STRICT_TENANT_BODIES)
async def test_a_tenant_body_takes_only_its_schema_types(
    api: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    body = {
        "id": f"t_{uuid.uuid4().hex[:10]}",
        "name": "Acme",
        "storageMode": "SCHEMA",
        "slaTier": "BASIC",
    }

    answer = await api.post("/api/tenants", json=body | overrides)

    assert answer.status_code == 422, answer.text
    assert fields_of(answer) == {field}, answer.text
