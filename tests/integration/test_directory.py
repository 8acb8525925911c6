"""The tenant directory against the real API, PostgreSQL and NATS: the epoch and the events
that carry it, ETags and 304s, the directory:read scope over every route, and the listing
followed by the lifecycle stream from its position, with changes made between its pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from yoyo import get_backend, read_migrations

from api.auth import ALL_SCOPES, DIRECTORY_SCOPE, READ_SCOPE
from api.main import create_app
from devstack.roles import Layout
from infra.db.repository import TenantRepository
from infra.db.schema import MIGRATIONS_DIR, apply_platform_migrations
from infra.events.nats import STREAM
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id, with_database
from tests.support.api_client import api_client
from tests.support.directory import (
    Listing,
    directory_headers,
    following,
    seed_tenant,
    walk_locations,
)
from tests.support.events import validate
from tests.support.polling import eventually
from tests.support.servers import free_port
from tests.support.storage_fleet import own_metadata_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

EPOCH_MIGRATION = "0015_tenant_epoch"
LOCATION_KEYS = {"tenantId", "status", "storageMode", "storageServer", "jdbcUrl", "epoch"}
# The only operations a directory:read token may call.
DIRECTORY_OPERATIONS = {
    ("get", "/api/tenants/{tenant_id}/location"),
    ("get", "/api/tenant-locations"),
}


def row_of(db_url: str, tenant_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT status, jdbc_url, storage_server, epoch FROM tenants WHERE id = %s",
            (tenant_id,),
        ).fetchone()
    assert row is not None
    return row


def outbox_data(db_url: str, tenant_id: str) -> list[dict[str, Any]]:
    """The `data` of the tenant's lifecycle events in the outbox, in write order."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT event -> 'data' FROM event_outbox WHERE subject_key = %s ORDER BY seq",
            (tenant_id,),
        ).fetchall()
    return [row[0] for row in rows]


def execute(db_url: str, statement: str, *params: object) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(statement, params)


async def test_epoch_grows_by_one_per_status_or_location_change_and_events_carry_it(
    tenants: TenantRepository, platform_db_url: str
) -> None:
    tenant_id = unique_id("dir")
    await seed_tenant(tenants, tenant_id)
    assert row_of(platform_db_url, tenant_id)["epoch"] == 1

    await tenants.note_provisioning_problem(tenant_id, "storage is slow")
    execute(platform_db_url, "UPDATE tenants SET name = 'Renamed' WHERE id = %s", tenant_id)
    # Only the trigger moves the epoch: a statement that sets it is overruled.
    execute(platform_db_url, "UPDATE tenants SET epoch = 99 WHERE id = %s", tenant_id)
    assert row_of(platform_db_url, tenant_id)["epoch"] == 1

    execute(
        platform_db_url, "UPDATE tenants SET storage_server = 'default' WHERE id = %s", tenant_id
    )
    assert row_of(platform_db_url, tenant_id)["epoch"] == 2
    await tenants.set_jdbc_url(tenant_id, f"jdbc:postgresql://db:5432/t?currentSchema={tenant_id}")
    await tenants.set_jdbc_url(tenant_id, f"jdbc:postgresql://db:5432/t?currentSchema={tenant_id}")
    assert row_of(platform_db_url, tenant_id)["epoch"] == 3
    epochs = [3]
    for target in (
        TenantStatus.MIGRATING,
        TenantStatus.ACTIVE,
        TenantStatus.DELETION_SCHEDULED,
        TenantStatus.DELETING,
        TenantStatus.DELETED,
    ):
        await tenants.transition(tenant_id, target, None, "tester")
        # A repeated transition changes nothing, so it raises nothing.
        await tenants.transition(tenant_id, target, None, "tester")
        epochs.append(row_of(platform_db_url, tenant_id)["epoch"])
    assert epochs == [3, 4, 5, 6, 7, 8]
    final = row_of(platform_db_url, tenant_id)
    assert final["status"] == "DELETED"
    assert final["jdbc_url"] is None

    data = outbox_data(platform_db_url, tenant_id)
    assert [d["epoch"] for d in data] == [1, 4, 5, 6, 7, 8]
    for d in data:
        assert set(d["location"]) == LOCATION_KEYS
        assert d["location"]["epoch"] == d["epoch"]
        assert d["location"]["tenantId"] == tenant_id
        assert d["location"]["status"] == (d["newStatus"] or "PROVISIONING")
    assert data[1]["location"]["jdbcUrl"].endswith(f"currentSchema={tenant_id}")
    assert data[1]["location"]["storageServer"] == "default"
    assert data[-1]["location"]["jdbcUrl"] is None


async def test_the_epoch_migration_rolls_back_and_applies_again(pg_server_url: str) -> None:
    name = unique_id("epoch_db")
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(pg_server_url, name)
    apply_platform_migrations(url)
    backend = get_backend(f"postgresql+psycopg://{url.partition('://')[2]}")
    try:
        with backend.lock():
            migrations = read_migrations(str(MIGRATIONS_DIR))
            epoch = migrations.__class__([m for m in migrations if m.id == EPOCH_MIGRATION])
            backend.rollback_migrations(backend.to_rollback(epoch))
    finally:
        backend.connection.close()
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tenants'"
        ).fetchall()
    assert ("epoch",) not in columns
    assert apply_platform_migrations(url) == [EPOCH_MIGRATION]


async def test_a_tenant_s_etag_changes_with_its_answer_and_a_match_is_304_without_a_body(
    make_settings: Callable[..., Settings], keys_dir: Path, tenants: TenantRepository
) -> None:
    tenant_id = unique_id("dir")
    await seed_tenant(tenants, tenant_id)
    url = f"/api/tenants/{tenant_id}"
    async with api_client(make_settings(), keys_dir) as http:
        first = await http.get(url)
        assert first.status_code == 200
        tag = first.headers["etag"]
        assert re.fullmatch(r'"[^"]+"', tag)
        assert first.headers["cache-control"] == "no-cache"
        assert (await http.get(url)).headers["etag"] == tag

        for header in (tag, f'"other", {tag}', "*", f"W/{tag}"):
            again = await http.get(url, headers={"If-None-Match": header})
            assert again.status_code == 304, header
            assert again.content == b""
            assert again.headers["etag"] == tag
            assert again.headers["cache-control"] == "no-cache"
        assert (await http.get(url, headers={"If-None-Match": '"other"'})).status_code == 200

        tags = [tag]
        for target in (TenantStatus.MIGRATING, TenantStatus.ACTIVE):
            await tenants.transition(tenant_id, target, None, "tester")
            changed = await http.get(url, headers={"If-None-Match": tags[-1]})
            assert changed.status_code == 200
            assert changed.json()["status"] == target.value
            tags.append(changed.headers["etag"])
            assert (await http.get(url)).headers["etag"] == tags[-1]
        assert len(set(tags)) == 3

        missing = await http.get(
            f"/api/tenants/{unique_id('nobody')}", headers={"If-None-Match": "*"}
        )
        assert missing.status_code == 404


async def test_a_location_s_etag_follows_its_epoch_only(
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    tenants: TenantRepository,
    platform_db_url: str,
) -> None:
    tenant_id = unique_id("dir")
    await seed_tenant(tenants, tenant_id)
    url = f"/api/tenants/{tenant_id}/location"
    service = directory_headers(keys_dir)
    async with api_client(make_settings(), keys_dir) as http:
        first = await http.get(url, headers=service)
        assert first.status_code == 200
        assert first.json() == {
            "tenantId": tenant_id,
            "status": "PROVISIONING",
            "storageMode": "SCHEMA",
            "storageServer": None,
            "jdbcUrl": None,
            "epoch": 1,
        }
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "no-cache"
        # What is not in the location leaves its tag alone.
        await tenants.note_provisioning_problem(tenant_id, "slow")
        unchanged = await http.get(url, headers=service | {"If-None-Match": tag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == tag

        await tenants.set_jdbc_url(tenant_id, "jdbc:postgresql://db:5432/t")
        moved = await http.get(url, headers=service | {"If-None-Match": tag})
        assert moved.status_code == 200
        assert moved.json()["epoch"] == 2
        assert moved.json()["jdbcUrl"] == "jdbc:postgresql://db:5432/t"
        assert moved.headers["etag"] != tag

        for target in (
            TenantStatus.DELETION_SCHEDULED,
            TenantStatus.DELETING,
            TenantStatus.DELETED,
        ):
            await tenants.transition(tenant_id, target, None, "tester")
        gone = await http.get(url, headers=service)
        assert gone.status_code == 200
        assert gone.json()["status"] == "DELETED"
        assert gone.json()["jdbcUrl"] is None
        assert gone.json()["epoch"] == 5
        assert (
            await http.get(url.replace(tenant_id, unique_id("nobody")), headers=service)
        ).status_code == 404


async def test_a_directory_token_is_refused_by_every_other_route(
    make_settings: Callable[..., Settings], keys_dir: Path, tenants: TenantRepository
) -> None:
    tenant_id = unique_id("dir")
    await seed_tenant(tenants, tenant_id)
    service = directory_headers(keys_dir)
    reader = directory_headers(keys_dir, READ_SCOPE)
    others = directory_headers(
        keys_dir, *(s for s in ALL_SCOPES if s not in (DIRECTORY_SCOPE, READ_SCOPE))
    )
    document = create_app(make_settings()).openapi()
    async with api_client(make_settings(), keys_dir) as http:
        allowed, refused = set(), set()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if not operation.get("security"):
                    continue
                concrete = re.sub(r"\{[^}]+\}", tenant_id, path)
                answer = await http.request(
                    method.upper(),
                    concrete,
                    headers=service | {"Content-Type": "application/json"},
                    content=b"{}",
                )
                if answer.status_code == 403:
                    assert answer.json()["requiredScope"] != DIRECTORY_SCOPE
                    refused.add((method, path))
                else:
                    assert answer.status_code == 200, (method, path, answer.text)
                    allowed.add((method, path))
                    for headers in (reader, others):
                        other = await http.request(method.upper(), concrete, headers=headers)
                        assert other.status_code == (200 if headers is reader else 403)
        assert allowed == DIRECTORY_OPERATIONS
        assert len(refused) >= 25


async def test_the_listing_pages_by_id_without_deleted_tenants_and_refuses_bad_values(
    make_settings: Callable[..., Settings], keys_dir: Path, tenants: TenantRepository
) -> None:
    prefix = unique_id("dl")
    ids = [f"{prefix}_{n}" for n in range(5)]
    for tenant_id in ids:
        await seed_tenant(tenants, tenant_id)
    for target in (TenantStatus.DELETION_SCHEDULED, TenantStatus.DELETING, TenantStatus.DELETED):
        await tenants.transition(ids[2], target, None, "tester")
    service = directory_headers(keys_dir)
    async with api_client(make_settings(), keys_dir) as http:
        first = await http.get("/api/tenant-locations", params={"limit": 2}, headers=service)
        assert first.status_code == 200
        assert len(first.json()["items"]) == 2
        assert first.json()["nextCursor"]
        assert first.headers["cache-control"] == "no-cache"
        # The events backend of these settings is not NATS.
        assert first.json()["eventsPosition"] is None

        listing = await walk_locations(http, service, limit=3)
        listed = [item["tenantId"] for page in listing.pages for item in page["items"]]
        assert listed == sorted(set(listed))
        assert all(item["status"] != "DELETED" for page in listing.pages for item in page["items"])
        assert [i for i in listed if i.startswith(prefix)] == [ids[0], ids[1], ids[3], ids[4]]
        assert all(len(page["items"]) == 3 for page in listing.pages[:-1])
        assert all(page["eventsPosition"] is None for page in listing.pages)

        default = await http.get("/api/tenant-locations", headers=service)
        assert len(default.json()["items"]) == min(500, len(listed))
        for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"cursor": "nope"}):
            bad = await http.get("/api/tenant-locations", params=params, headers=service)
            assert bad.status_code == 422, params
            assert bad.headers["content-type"] == "application/problem+json"


async def test_without_a_reachable_nats_the_listing_has_no_events_position(
    make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    settings = make_settings(events_backend="nats", events_url=f"nats://127.0.0.1:{free_port()}")
    async with api_client(settings, keys_dir) as http:
        page = await http.get(
            "/api/tenant-locations", params={"limit": 1}, headers=directory_headers(keys_dir)
        )
        assert page.status_code == 200
        assert page.json()["eventsPosition"] is None


async def test_listing_then_following_the_events_misses_no_change_made_between_pages(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    nats_url: str,
    pg_server_url: str,
    database_roles: Layout,
) -> None:
    # A metadata database of its own: the session's holds every other test's events, which
    # none of them published (their relays are off), and a relay would publish that backlog
    # before this test's changes; how long that takes depends on which tests ran before.
    platform_db_url = own_metadata_database(pg_server_url)
    prefix = unique_id("dw")
    ids = [f"{prefix}_{n}" for n in range(1, 7)]
    settings = make_settings(
        events_backend="nats", events_url=nats_url, database_url=platform_db_url
    )
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool:
        tenants = TenantRepository(pool)
        for tenant_id in ids:
            await seed_tenant(tenants, tenant_id)
        # Created between pages with the smallest id: never listed, known only from its events.
        late = f"{prefix}_0"
        service = directory_headers(keys_dir)

        stages: list[str] = []

        async def change(listing: Listing) -> None:
            # The changes start once the walk reached ours, when ids[0] is listed and ids[5]
            # is not yet.
            if not stages and ids[0] in listing.locations:
                stages.append("first")
                assert ids[5] not in listing.locations
                await tenants.transition(ids[0], TenantStatus.MIGRATING, None, "tester")
                await tenants.transition(ids[5], TenantStatus.MIGRATING, None, "tester")
                await tenants.set_jdbc_url(ids[4], "jdbc:postgresql://db:5432/t4")
                await seed_tenant(tenants, late)
            elif stages == ["first"]:
                stages.append("second")
                await tenants.transition(ids[0], TenantStatus.ACTIVE, None, "tester")
                for target in (
                    TenantStatus.DELETION_SCHEDULED,
                    TenantStatus.DELETING,
                    TenantStatus.DELETED,
                ):
                    await tenants.transition(ids[3], target, None, "tester")

        async with (
            running_worker(temporal_client, settings),
            api_client(settings, keys_dir) as http,
        ):
            listing = await walk_locations(http, service, limit=2, between_pages=change)
            position = listing.pages[0]["eventsPosition"]
            assert position is not None
            assert position["stream"] == STREAM
            assert isinstance(position["sequence"], int)
            assert all(page["eventsPosition"] is None for page in listing.pages[1:])
            assert stages == ["first", "second"]
            assert late not in listing.locations

            async with following(nats_url, position["sequence"], listing.locations) as follower:
                truth = {
                    tenant_id: (
                        await http.get(f"/api/tenants/{tenant_id}/location", headers=service)
                    ).json()
                    for tenant_id in [late, *ids]
                }

                async def mine() -> dict[str, Any]:
                    return {t: listing.locations.get(t) for t in truth}

                await eventually(mine, lambda held: held == truth, timeout=30)
            assert truth[ids[3]]["status"] == "DELETED"
            assert truth[ids[0]]["status"] == "ACTIVE"
            for event in follower.events:
                validate(event)
                assert event["data"]["epoch"] == event["data"]["location"]["epoch"]
            for tenant_id in truth:
                assert truth[tenant_id]["epoch"] == row_of(platform_db_url, tenant_id)["epoch"]


async def test_the_openapi_document_describes_the_directory(
    make_settings: Callable[..., Settings],
) -> None:
    document = create_app(make_settings()).openapi()
    paths = document["paths"]
    for path in ("/api/tenants/{tenant_id}", "/api/tenants/{tenant_id}/location"):
        responses = paths[path]["get"]["responses"]
        assert set(responses["200"]["headers"]) == {"ETag", "Cache-Control"}
        assert set(responses["304"]["headers"]) == {"ETag", "Cache-Control"}
        assert "content" not in responses["304"]
    listing = paths["/api/tenant-locations"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 1000, 500)
    for operation in (listing, paths["/api/tenants/{tenant_id}/location"]["get"]):
        assert "`directory:read` or `tenants:read`" in operation["description"]
    bearer = document["components"]["securitySchemes"]["bearerAuth"]["description"]
    assert "`directory:read`" in bearer
    page = document["components"]["schemas"]["TenantLocationPage"]["properties"]
    assert set(page) == {"items", "nextCursor", "eventsPosition"}
