"""Bounded event stores: published events and settled commands are pruned after their
retention, the lifecycle stream gets its limits from the settings and keeps an operator's, a
large backlog is cheap to measure, and `/readyz` says whether the command bus answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import psycopg
import pytest
from nats.js.api import StreamConfig
from psycopg_pool import AsyncConnectionPool

from api.main import create_app
from devstack.nats import EmbeddedNats
from infra.db.outbox import outbox_backlog
from infra.events.nats import STREAM, NatsBus, stream_config
from infra.events.pruner import prune_event_stores
from tenancy.settings import DownstreamService, Settings
from tests.support.event_stores import (
    median_seconds,
    own_database,
    pages_fetched,
    present,
    write_backlog,
    write_commands,
    write_published,
)
from tests.support.polling import eventually
from tests.support.servers import free_port, serve
from worker import worker_activities

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BACKLOG = 200_000
OLDEST = timedelta(hours=3)
WEEK = timedelta(days=7)
LONG_AGO = timedelta(days=8)
LATELY = timedelta(days=1)
MiB = 1024 * 1024


async def test_readyz_answers_within_100_ms_over_a_backlog_of_200000_events(
    pg_server_url: str, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    db_url = own_database(pg_server_url, "backlog")
    write_backlog(db_url, BACKLOG, OLDEST)
    settings = make_settings(database_url=db_url)
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            ready = await api.get("/readyz")
            assert ready.status_code == 200, ready.text
            took = await median_seconds(lambda: api.get("/readyz"), 7)
            ready = await api.get("/readyz")

    events = ready.json()["events"]
    # Before the indexes of migration 0011: a median of 56 ms here (and growing with the
    # backlog); 4 ms after.
    assert took < 0.100, f"/readyz median {took * 1000:.1f} ms"
    assert events["backlog"] == BACKLOG
    assert events["backlogExact"] is False
    # The first event was written OLDEST ago; the calls above took seconds at most.
    assert OLDEST.total_seconds() <= events["oldestSeconds"] < OLDEST.total_seconds() + 60


async def test_measuring_a_backlog_of_200000_events_reads_a_bounded_number_of_pages(
    pg_server_url: str,
) -> None:
    db_url = own_database(pg_server_url, "backlog")
    write_backlog(db_url, BACKLOG, OLDEST)

    pages = await pages_fetched(db_url, "event_outbox", outbox_backlog)

    # The events fill about 15,000 pages, which a count over all of them read (15,388 before
    # migration 0011); a bounded read touches about a hundred.
    assert pages < 500, f"{pages} pages read"


async def test_a_backlog_under_the_bound_is_counted_exactly(pg_server_url: str) -> None:
    db_url = own_database(pg_server_url, "backlog")
    write_backlog(db_url, 40, OLDEST)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Holes in the run of unpublished events, as a relay behind late commits leaves them.
        conn.execute("UPDATE event_outbox SET published_at = now() WHERE seq % 4 = 0")
    async with AsyncConnectionPool(db_url, min_size=1, max_size=1) as pool:
        backlog = await outbox_backlog(pool)
    assert (backlog.count, backlog.exact) == (30, True)
    assert OLDEST <= backlog.oldest < OLDEST + timedelta(minutes=1)


async def test_published_events_and_settled_commands_past_retention_are_pruned(
    pg_server_url: str,
) -> None:
    db_url = own_database(pg_server_url, "prune")
    old = write_published(db_url, 2_500, LONG_AGO)
    recent = write_published(db_url, 5, LATELY)
    write_backlog(db_url, 3, LONG_AGO)
    settled = [
        *write_commands(db_url, "succeeded", LONG_AGO, 1_200),
        *write_commands(db_url, "rejected", LONG_AGO, 3),
    ]
    kept = [
        *write_commands(db_url, "failed", LONG_AGO, 3),
        *write_commands(db_url, None, LONG_AGO, 3),
        *write_commands(db_url, "succeeded", LATELY, 3),
    ]
    # A row another transaction holds is skipped, never waited for.
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT 1 FROM event_outbox WHERE id = %s FOR UPDATE", (old[0],))
        async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
            pruned = await asyncio.wait_for(
                prune_event_stores(pool, retention=WEEK, batch_size=400), timeout=30
            )
    assert (pruned.events, pruned.commands) == (2_499, 1_203)
    assert present(db_url, "event_outbox", "id", old) == 1
    assert present(db_url, "event_outbox", "id", recent) == 5
    with psycopg.connect(db_url) as conn:
        unpublished = conn.execute(
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
        ).fetchone()
    assert unpublished == (3,)
    assert present(db_url, "downstream_commands", "command_id", settled) == 0
    assert present(db_url, "downstream_commands", "command_id", kept) == 9


async def test_the_worker_prunes_what_is_past_the_retention(
    pg_server_url: str, make_settings: Callable[..., Settings]
) -> None:
    db_url = own_database(pg_server_url, "prune")
    old = write_published(db_url, 30, timedelta(hours=2))
    recent = write_published(db_url, 4, timedelta(minutes=1))
    waiting = write_commands(db_url, None, timedelta(hours=2), 2)
    settled = write_commands(db_url, "succeeded", timedelta(hours=2), 6)
    settings = make_settings(database_url=db_url, events_retention=timedelta(hours=1))
    async with worker_activities(settings):
        await eventually(
            lambda: asyncio.to_thread(present, db_url, "event_outbox", "id", old),
            lambda left: left == 0,
        )
        await eventually(
            lambda: asyncio.to_thread(
                present, db_url, "downstream_commands", "command_id", settled
            ),
            lambda left: left == 0,
        )
    assert present(db_url, "event_outbox", "id", recent) == 4
    assert present(db_url, "downstream_commands", "command_id", waiting) == 2


async def _stream(url: str) -> StreamConfig:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).config
    finally:
        await nc.close()


async def test_the_stream_gets_the_settings_limits_and_keeps_an_operators(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats", free_port()) as server:
        configured = stream_config(max_age=timedelta(hours=2), max_bytes=64 * MiB)
        bus = NatsBus(server.url, stream=configured)
        await bus.start()
        await bus.close()
        created = await _stream(server.url)
        assert (created.max_age, created.max_bytes) == (7200, 64 * MiB)

        nc = await nats.connect(server.url)
        try:
            created.max_age = 3600
            created.max_bytes = 16 * MiB
            created.max_msgs = 50_000
            # An older platform's duplicate window: the platform's own, brought in line.
            created.duplicate_window = 30
            await nc.jetstream().update_stream(created)
        finally:
            await nc.close()

        again = NatsBus(server.url, stream=configured)
        await again.start()
        await again.close()
        kept = await _stream(server.url)
    assert (kept.max_age, kept.max_bytes, kept.max_msgs) == (3600, 16 * MiB, 50_000)
    assert kept.duplicate_window == 120
    assert kept.subjects == configured.subjects


async def test_readyz_says_whether_the_command_bus_answers(
    tmp_path: Path, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    server = EmbeddedNats(tmp_path / "nats", free_port())
    server.start()
    ledger = DownstreamService(
        name="ledger-service", transport="events", reply_key_file=keys_dir / "idp.pem"
    )
    settings = make_settings(downstream_services=(ledger,), events_url=server.url)
    try:
        with serve(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as api:
                ready = await api.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["commandBus"] == "ok"

                server.stop()
                down = await eventually(
                    lambda: api.get("/readyz"), lambda r: r.status_code == 503, timeout=15
                )
                checks = down.json()["checks"]
                assert checks["commandBus"].startswith("unavailable")
                assert (checks["postgresql"], checks["temporal"]) == ("ok", "ok")

                server.start()
                back = await eventually(
                    lambda: api.get("/readyz"), lambda r: r.status_code == 200, timeout=30
                )
                assert back.json()["checks"]["commandBus"] == "ok"
    finally:
        server.stop()


async def test_readyz_has_no_command_bus_check_without_an_events_service(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(events_url=f"nats://127.0.0.1:{free_port()}")
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgresql", "temporal"}
