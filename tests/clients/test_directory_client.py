"""The tenant directory client (clients/python) against a real HTTP server built to the
issue's contract (tests/support/directory_api.py) and the real NATS JetStream stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from tenant_directory import DirectoryUnavailable, Location, TenantDirectory, TenantNotFound

from tests.conftest import unique_id
from tests.support.directory_api import TOKEN, DirectoryPlatform, directory_platform
from tests.support.polling import eventually
from tests.support.servers import free_port, serve
from tests.support.tcp_proxy import ThreadedTcpProxy, through

LISTING = "/api/tenant-locations"
FAST_RETRY = timedelta(milliseconds=100)


def location_path(tenant_id: str) -> str:
    return f"/api/tenants/{tenant_id}/location"


@pytest.fixture
async def platform(nats_url: str) -> AsyncIterator[DirectoryPlatform]:
    async with directory_platform(nats_url) as created:
        yield created


@pytest.fixture
def api_url(platform: DirectoryPlatform) -> Iterator[str]:
    with serve(platform.app()) as url:
        yield url


async def test_a_cached_location_is_served_without_asking_the_api(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id = unique_id("hit")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, max_age=timedelta(minutes=1)) as directory:
        first = await directory.get(tenant_id)
        second = await directory.get(tenant_id)

    assert first == second
    assert first.epoch == 1
    assert first.status == "ACTIVE"
    assert first.jdbc_url == platform.locations[tenant_id]["jdbcUrl"]
    assert not first.stale
    assert len(platform.requests(location_path(tenant_id))) == 1
    assert (directory.stats.misses, directory.stats.hits) == (1, 1)


async def test_concurrent_gets_of_one_tenant_share_one_request(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id = unique_id("herd")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN) as directory:
        answers = await asyncio.gather(*(directory.get(tenant_id) for _ in range(10)))

    assert {answer.epoch for answer in answers} == {1}
    assert len(platform.requests(location_path(tenant_id))) == 1


async def test_an_entry_older_than_max_age_is_revalidated_with_its_etag(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id = unique_id("reval")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, max_age=timedelta(0)) as directory:
        await directory.get(tenant_id)
        unchanged = await directory.get(tenant_id)
        await platform.change(tenant_id, status="DELETION_SCHEDULED")
        changed = await directory.get(tenant_id)

    seen = platform.requests(location_path(tenant_id))
    assert [(s.if_none_match, s.status) for s in seen] == [
        (None, 200),
        ('"loc-1"', 304),
        ('"loc-1"', 200),
    ]
    assert unchanged.epoch == 1
    assert (changed.epoch, changed.status) == (2, "DELETION_SCHEDULED")
    stats = directory.stats
    assert (stats.misses, stats.revalidations, stats.not_modified, stats.hits) == (1, 2, 1, 0)


async def test_the_watch_answers_from_the_cache_and_follows_changes(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id = unique_id("watch")
    await platform.create(tenant_id)
    async with TenantDirectory(
        api_url, TOKEN, events_url=nats_url, max_age=timedelta(0)
    ) as directory:
        assert directory.watching
        assert (await directory.get(tenant_id)).epoch == 1
        await platform.change(tenant_id, status="DELETION_SCHEDULED")
        changed = await eventually(lambda: directory.get(tenant_id), lambda loc: loc.epoch == 2)

    assert changed.status == "DELETION_SCHEDULED"
    # max_age 0 would revalidate every get: the watch alone kept the entry current.
    assert platform.requests(location_path(tenant_id)) == []
    assert directory.stats.events_applied >= 1


async def test_an_old_event_after_a_newer_one_changes_nothing(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id, marker = unique_id("order"), unique_id("marker")
    await platform.create(tenant_id)
    old = await platform.change(tenant_id, status="MIGRATING")
    await platform.change(tenant_id, status="ACTIVE")
    async with TenantDirectory(api_url, TOKEN, events_url=nats_url) as directory:
        assert (await directory.get(tenant_id)).epoch == 3
        applied = directory.stats.events_applied
        await platform.publish(old)
        # Events arrive in stream order: once the marker is in, the old event was handled.
        await platform.create(marker)
        await eventually(lambda: _peek(directory, marker), lambda known: known is not None)
        after = await directory.get(tenant_id)

    assert (after.epoch, after.status) == (3, "ACTIVE")
    assert directory.stats.events_applied == applied + 1
    assert platform.requests(location_path(tenant_id)) == []


async def test_an_old_http_answer_after_a_newer_event_changes_nothing(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id = unique_id("lag")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, events_url=nats_url) as directory:
        # An event newer than what the API answers (a lagging read, say).
        await platform.publish(platform.locations[tenant_id] | {"epoch": 2, "status": "MIGRATING"})
        await eventually(lambda: directory.get(tenant_id), lambda loc: loc.epoch == 2)
        directory.invalidate(tenant_id)
        answered = await directory.get(tenant_id)
        again = await directory.get(tenant_id)

    assert [s.status for s in platform.requests(location_path(tenant_id))] == [200]
    assert (answered.epoch, answered.status) == (2, "MIGRATING")
    assert again == answered


async def test_list_then_watch_loses_no_change_made_while_listing(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    prefix = unique_id("list")
    ids = [f"{prefix}_{n}" for n in range(6)]
    for tenant_id in ids:
        await platform.create(tenant_id)
    late = f"{prefix}_0a"  # sorts into the first page, created once it was read
    platform.page_size = 2

    async def between_pages() -> None:
        await platform.change(ids[0], status="MIGRATING")  # on the page already read
        await platform.change(ids[4], status="MIGRATING")  # on a page still to read
        await platform.create(late)

    async def after_the_last_page() -> None:
        await platform.change(ids[1], status="DELETION_SCHEDULED")
        await platform.change(ids[5], status="DELETION_SCHEDULED")

    platform.before_page[1] = between_pages
    platform.after_page[2] = after_the_last_page
    async with TenantDirectory(
        api_url, TOKEN, events_url=nats_url, page_size=2, max_age=timedelta(0)
    ) as directory:
        expected = {tenant_id: platform.locations[tenant_id]["epoch"] for tenant_id in ids}
        expected[late] = 1
        assert expected == {
            ids[0]: 2,
            ids[1]: 2,
            ids[2]: 1,
            ids[3]: 1,
            ids[4]: 2,
            ids[5]: 2,
            late: 1,
        }

        async def cached() -> dict[str, int | None]:
            return {t: None if (loc := directory.peek(t)) is None else loc.epoch for t in expected}

        # The listing and the events alone: no get has asked the API yet.
        await eventually(cached, lambda seen: seen == expected)
        answered = {t: (await directory.get(t)).epoch for t in expected}

    assert answered == expected

    # Pages of 2 over 6 listed tenants: the fourth, empty, ends the listing.
    assert [s.status for s in platform.requests(LISTING)] == [200, 200, 200, 200]
    assert [t for t in expected if platform.requests(location_path(t))] == []


async def test_the_api_stopped_serves_stale_then_recovers(
    platform: DirectoryPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id = unique_id("stale")
    await platform.create(tenant_id)
    port = free_port()
    async with TenantDirectory(
        f"http://127.0.0.1:{port}",
        TOKEN,
        max_age=timedelta(0),
        stale_if_error=timedelta(minutes=1),
        retry_wait=FAST_RETRY,
    ) as directory:
        with serve(platform.app(), port=port):
            fresh = await directory.get(tenant_id)
        await platform.change(tenant_id, status="MIGRATING")
        with caplog.at_level(logging.WARNING, logger="tenant_directory"):
            stale = await directory.get(tenant_id)
        stopped = directory.stats
        with serve(platform.app(), port=port):
            recovered = await eventually(
                lambda: directory.get(tenant_id), lambda loc: not loc.stale
            )

    assert (fresh.epoch, fresh.stale) == (1, False)
    assert stale == replace(fresh, stale=True)
    assert (stopped.stale_served, stopped.errors) == (1, 1)
    assert any(
        r.levelno == logging.WARNING and tenant_id in r.getMessage() and "stale" in r.getMessage()
        for r in caplog.records
    )
    assert (recovered.epoch, recovered.status, recovered.stale) == (2, "MIGRATING", False)


async def test_a_5xx_is_served_stale_too(platform: DirectoryPlatform, api_url: str) -> None:
    tenant_id = unique_id("5xx")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, max_age=timedelta(0)) as directory:
        await directory.get(tenant_id)
        platform.failing = 503
        stale = await directory.get(tenant_id)

    assert (stale.epoch, stale.stale) == (1, True)
    assert (directory.stats.stale_served, directory.stats.errors) == (1, 1)


async def test_a_failed_api_is_not_asked_again_within_retry_wait(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id = unique_id("holdoff")
    await platform.create(tenant_id)
    async with TenantDirectory(
        api_url, TOKEN, max_age=timedelta(0), retry_wait=timedelta(minutes=1)
    ) as directory:
        await directory.get(tenant_id)
        platform.failing = 503
        answers = [await directory.get(tenant_id) for _ in range(5)]

    assert [a.stale for a in answers] == [True] * 5
    assert [s.status for s in platform.requests(location_path(tenant_id))] == [200, 503]
    assert (directory.stats.stale_served, directory.stats.errors) == (5, 1)


async def test_past_the_stale_bound_the_directory_is_unavailable(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id, never_seen = unique_id("bound"), unique_id("never")
    await platform.create(tenant_id)
    async with TenantDirectory(
        api_url, TOKEN, max_age=timedelta(0), stale_if_error=timedelta(milliseconds=300)
    ) as directory:
        await directory.get(tenant_id)
        platform.failing = 503
        first = await directory.get(tenant_id)

        async def outcome() -> object:
            try:
                return await directory.get(tenant_id)
            except DirectoryUnavailable as exc:
                return exc

        refused = await eventually(outcome, lambda o: isinstance(o, DirectoryUnavailable))
        with pytest.raises(DirectoryUnavailable):
            await directory.get(never_seen)

    assert first.stale
    assert "past max_age + stale_if_error" in str(refused)


async def test_an_unknown_or_removed_tenant_is_not_found(
    platform: DirectoryPlatform, api_url: str
) -> None:
    tenant_id = unique_id("gone")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, max_age=timedelta(0)) as directory:
        with pytest.raises(TenantNotFound):
            await directory.get(unique_id("nobody"))
        await directory.get(tenant_id)
        del platform.locations[tenant_id]
        with pytest.raises(TenantNotFound):
            await directory.get(tenant_id)
        platform.failing = 503
        # The 404 dropped the entry: nothing is left to serve stale.
        with pytest.raises(DirectoryUnavailable):
            await directory.get(tenant_id)


async def test_invalidate_makes_the_next_get_ask_the_api(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id = unique_id("inval")
    await platform.create(tenant_id)
    async with TenantDirectory(api_url, TOKEN, events_url=nats_url) as directory:
        await directory.get(tenant_id)
        directory.invalidate(tenant_id)
        asked = await directory.get(tenant_id)
        await directory.get(tenant_id)

    assert [s.status for s in platform.requests(location_path(tenant_id))] == [200]
    assert asked.epoch == 1
    assert (directory.stats.hits, directory.stats.revalidations) == (2, 1)


async def test_without_an_events_position_the_directory_revalidates(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id = unique_id("noevents")
    await platform.create(tenant_id)
    platform.no_events = True
    async with TenantDirectory(
        api_url, TOKEN, events_url=nats_url, max_age=timedelta(0)
    ) as directory:
        assert not directory.watching
        listed = directory.peek(tenant_id)
        changed = await platform.change(tenant_id, status="MIGRATING")
        answered = await directory.get(tenant_id)

    assert listed is not None
    assert listed.epoch == 1
    assert answered.epoch == changed["epoch"] == 2
    assert [s.status for s in platform.requests(location_path(tenant_id))] == [200]


async def test_a_broken_watch_falls_back_to_revalidation_and_resumes_without_gap(
    platform: DirectoryPlatform, api_url: str, nats_url: str
) -> None:
    tenant_id, deleted = unique_id("broken"), unique_id("deleted")
    await platform.create(tenant_id)
    await platform.create(deleted)
    host, _, nats_port = nats_url.rpartition("//")[2].rpartition(":")
    proxy = ThreadedTcpProxy(free_port(), host, int(nats_port))
    proxy.start()
    try:
        async with TenantDirectory(
            api_url,
            TOKEN,
            events_url=through(nats_url, proxy.port),
            max_age=timedelta(0),
            retry_wait=FAST_RETRY,
        ) as directory:
            assert directory.watching
            proxy.stop()
            await eventually(_watching(directory), lambda watching: not watching)
            await platform.change(tenant_id, status="MIGRATING")
            revalidated = await directory.get(tenant_id)
            asked_while_broken = len(platform.requests(location_path(tenant_id)))
            # Changed while no watch runs: the re-list, not the events, must bring it.
            await platform.change(tenant_id, status="ACTIVE")
            # Deleted while no watch runs: the re-list lacks it, so the cache must too.
            await platform.change(deleted, status="DELETED")
            proxy.start()
            await eventually(_watching(directory), bool)
            resumed = await directory.get(tenant_id)
            gone = await directory.get(deleted)
            await platform.change(tenant_id, status="DELETION_SCHEDULED")
            followed = await eventually(
                lambda: directory.get(tenant_id), lambda loc: loc.epoch == 4
            )
    finally:
        proxy.close()

    assert (revalidated.epoch, revalidated.status) == (2, "MIGRATING")
    assert asked_while_broken == 1
    assert (resumed.epoch, resumed.status) == (3, "ACTIVE")
    assert (gone.epoch, gone.status) == (2, "DELETED")
    assert followed.status == "DELETION_SCHEDULED"
    assert len(platform.requests(location_path(tenant_id))) == asked_while_broken
    assert len(platform.requests(LISTING)) >= 2


async def _peek(directory: TenantDirectory, tenant_id: str) -> Location | None:
    return directory.peek(tenant_id)


def _watching(directory: TenantDirectory):
    async def probe() -> bool:
        return directory.watching

    return probe
