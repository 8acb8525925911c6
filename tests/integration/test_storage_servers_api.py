"""`/api/storage-servers` against the real API over real PostgreSQL servers: the list in
configuration order with counts, tiers and the worker's checks, one server, cordon and uncordon
with their audit trail, scopes, refused bodies, and a cordon that outlives the API.

Every test has its own metadata database (`fleet_stage`): a cordon is a server's row, and the
session's shared `default` server must never be cordoned under the other tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from tenancy.models import SlaTier, StorageMode
from tests.support.api_client import api_client, token_of
from tests.support.server_api import (
    SERVERS,
    URL_SECRET,
    fleet_settings,
    place_tenants,
    record_failed_check,
    run_checks,
)
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BASE = "/api/storage-servers"
EVENT_FIELDS = {"type", "actor", "reason", "occurredAt"}


def bearer(keys_dir: Path, subject: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(keys_dir, subject, *scopes)}"}


async def state_of(api: httpx.AsyncClient, name: str) -> tuple[str, list[dict[str, Any]]]:
    server = await api.get(f"{BASE}/{name}")
    events = await api.get(f"{BASE}/{name}/events")
    assert server.status_code == 200, server.text
    assert events.status_code == 200, events.text
    return server.json()["state"], events.json()["items"]


async def test_the_list_shows_each_configured_server_in_order_with_its_tenants_and_checks(
    fleet_stage: FleetStage, keys_dir: Path
) -> None:
    settings = fleet_settings(fleet_stage)
    await place_tenants(settings, "srv_std", 3, SlaTier.STANDARD, StorageMode.SCHEMA)
    await place_tenants(settings, "srv_pre", 1, SlaTier.PREMIUM, StorageMode.DATABASE)
    async with api_client(settings, keys_dir) as api:
        unchecked = (await api.get(BASE)).json()["items"]
        await run_checks(settings)
        listed = await api.get(BASE)
        one = await api.get(f"{BASE}/pg-b")
        unknown = [
            await api.get(f"{BASE}/pg-nowhere"),
            await api.get(f"{BASE}/pg-nowhere/events"),
        ]
        malformed = await api.get(f"{BASE}/Not_A_Name")
        tenant = await api.get("/api/tenants/srv_pre_000")
        schema = (await api.get("/openapi.json")).json()

    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [s["name"] for s in items] == list(SERVERS)
    a, b, c = items
    assert {k: a[k] for k in ("pool", "state", "storageModes", "maxTenants", "tenants")} == {
        "pool": "shared",
        "state": "ACTIVE",
        "storageModes": ["SCHEMA", "DATABASE"],
        "maxTenants": 10,
        "tenants": 3,
    }
    assert a["tiers"] == b["tiers"] == ["BASIC", "STANDARD"]
    assert (b["storageModes"], b["maxTenants"], b["tenants"]) == (["DATABASE"], 5, 0)
    assert (c["pool"], c["tiers"], c["tenants"], c["maxTenants"]) == (
        "dedicated",
        ["PREMIUM"],
        1,
        2,
    )
    for before, after in zip(unchecked, items, strict=True):
        assert (before["reachable"], before["checkedAt"], before["serverVersion"]) == (
            None,
            None,
            None,
        )
        assert after["reachable"] is True
        assert datetime.fromisoformat(after["checkedAt"]) > datetime.fromisoformat(
            "2000-01-01T00:00:00+00:00"
        )
        assert after["serverVersion"]
        assert after["checkError"] is None
        assert (after["stateReason"], after["stateChangedBy"]) == (None, None)
    assert a["host"] == f"127.0.0.1:{httpx.URL(fleet_stage.urls[0]).port}"
    assert one.json() == b
    assert URL_SECRET not in listed.text + one.text
    assert all("url" not in item for item in items)
    for answer in unknown:
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == "urn:platform-service:problem:storage-server-not-found"
    assert malformed.status_code == 422
    assert tenant.json()["storageServer"] == "pg-c"

    paths = schema["paths"]
    assert set(paths[BASE]) == {"get"}
    for path, method, codes in (
        (BASE, "get", {"200", "401", "403", "503"}),
        (f"{BASE}/{{name}}", "get", {"200", "401", "403", "404", "422"}),
        (f"{BASE}/{{name}}/events", "get", {"200", "401", "403", "404", "422"}),
        (f"{BASE}/{{name}}/cordon", "post", {"202", "401", "403", "404", "409", "415", "422"}),
        (f"{BASE}/{{name}}/uncordon", "post", {"202", "401", "403", "404", "409", "415", "422"}),
    ):
        operation = paths[path][method]
        assert codes <= set(operation["responses"]), (path, sorted(operation["responses"]))
        assert operation["security"], path
    assert "tenants:read" in paths[BASE]["get"]["description"]
    cordon = paths[f"{BASE}/{{name}}/cordon"]["post"]
    assert SERVERS_WRITE_SCOPE in cordon["description"]
    assert cordon["responses"]["409"]["description"] == "The server is already cordoned"
    assert not cordon["requestBody"].get("required", False)
    item = schema["components"]["schemas"]["StorageServerItem"]
    assert {"name", "pool", "state", "storageModes", "maxTenants", "tenants", "tiers"} <= set(
        item["properties"]
    )
    assert {"reachable", "checkedAt", "serverVersion"} <= set(item["properties"])


async def test_cordon_and_uncordon_need_servers_write_and_are_audited_and_kept(
    fleet_stage: FleetStage, keys_dir: Path
) -> None:
    settings = fleet_settings(fleet_stage)
    reader = bearer(keys_dir, "rita", READ_SCOPE, WRITE_SCOPE)
    operator = bearer(keys_dir, "olga", READ_SCOPE, SERVERS_WRITE_SCOPE)
    async with api_client(settings, keys_dir) as api:
        anonymous = await api.post(
            f"{BASE}/pg-a/cordon", json={"reason": "x"}, headers={"Authorization": ""}
        )
        refused = await api.post(f"{BASE}/pg-a/cordon", json={"reason": "x"}, headers=reader)
        refused_bodies: list[object] = [
            {"reason": 5},
            {"reason": "disk", "drain": True},
            {"reason": "disk \u202e full"},
            {"reason": "x" * 501},
            {"reason": ""},
            [],
        ]
        bad_bodies = [
            await api.post(f"{BASE}/pg-a/cordon", json=body, headers=operator)
            for body in refused_bodies
        ]
        not_json = await api.post(
            f"{BASE}/pg-a/cordon",
            content=b"reason=disk",
            headers={**operator, "Content-Type": "application/x-www-form-urlencoded"},
        )
        untouched = await state_of(api, "pg-a")

        cordoned = await api.post(
            f"{BASE}/pg-a/cordon", json={"reason": "disk replacement"}, headers=operator
        )
        again = await api.post(f"{BASE}/pg-a/cordon", headers=operator)
        others = [(await api.get(f"{BASE}/{name}")).json()["state"] for name in SERVERS]
        unknown = await api.post(f"{BASE}/pg-nowhere/cordon", headers=operator)

    # A new API over the same metadata database: the cordon is the server's row.
    async with api_client(settings, keys_dir) as api:
        after_restart, trail = await state_of(api, "pg-a")
        # No body at all: the reason is optional.
        uncordoned = await api.post(f"{BASE}/pg-a/uncordon", headers=operator)
        uncordon_again = await api.post(
            f"{BASE}/pg-a/uncordon", json={"reason": "still"}, headers=operator
        )
        final, final_trail = await state_of(api, "pg-a")

    assert anonymous.status_code == 401
    assert refused.status_code == 403
    assert refused.json()["requiredScope"] == SERVERS_WRITE_SCOPE
    assert [r.status_code for r in bad_bodies] == [422] * 6, [r.text for r in bad_bodies]
    assert not_json.status_code == 415
    assert untouched == ("ACTIVE", [])

    assert cordoned.status_code == 202, cordoned.text
    server = cordoned.json()
    assert server["name"] == "pg-a"
    assert server["state"] == "CORDONED"
    assert (server["stateReason"], server["stateChangedBy"]) == ("disk replacement", "olga")
    assert server["stateChangedAt"]
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["serverState"] == "CORDONED"
    assert others == ["CORDONED", "ACTIVE", "ACTIVE"]
    assert unknown.status_code == 404

    assert after_restart == "CORDONED"
    assert [(e["type"], e["actor"], e["reason"]) for e in trail] == [
        ("CORDONED", "olga", "disk replacement")
    ]
    assert set(trail[0]) == EVENT_FIELDS
    assert uncordoned.status_code == 202, uncordoned.text
    assert uncordoned.json()["state"] == "ACTIVE"
    assert uncordoned.json()["stateReason"] is None
    assert uncordon_again.status_code == 409
    assert uncordon_again.json()["serverState"] == "ACTIVE"
    assert final == "ACTIVE"
    assert [(e["type"], e["actor"], e["reason"]) for e in final_trail] == [
        ("CORDONED", "olga", "disk replacement"),
        ("UNCORDONED", "olga", None),
    ]
    occurred = [datetime.fromisoformat(e["occurredAt"]) for e in final_trail]
    assert occurred == sorted(occurred)


async def test_reading_servers_needs_tenants_read(fleet_stage: FleetStage, keys_dir: Path) -> None:
    settings = fleet_settings(fleet_stage)
    writer_only = bearer(keys_dir, "sam", SERVERS_WRITE_SCOPE)
    async with api_client(settings, keys_dir) as api:
        paths = (BASE, f"{BASE}/pg-a", f"{BASE}/pg-a/events")
        anonymous = [await api.get(p, headers={"Authorization": ""}) for p in paths]
        refused = [await api.get(p, headers=writer_only) for p in paths]

    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert all(r.json()["requiredScope"] == READ_SCOPE for r in refused)


async def test_a_check_error_never_shows_the_servers_password(
    fleet_stage: FleetStage, keys_dir: Path
) -> None:
    settings = fleet_settings(fleet_stage)
    # What a driver might echo of a connection string it could not use.
    error = f'invalid connection "postgresql://platform:{URL_SECRET}@10.0.0.5/tenants"'
    await record_failed_check(settings, "pg-b", error)
    async with api_client(settings, keys_dir) as api:
        listed = await api.get(BASE)
        one = await api.get(f"{BASE}/pg-b")

    assert one.json()["reachable"] is False
    assert one.json()["checkError"] == (
        'invalid connection "postgresql://platform:***@10.0.0.5/tenants"'
    )
    assert URL_SECRET not in listed.text + one.text
