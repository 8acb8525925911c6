"""Set-ups for the bounded-store tests: a metadata database of a test's own (so a relay or a
pruner of another test never touches its rows), a large outbox backlog written in one
statement, and published events and settled commands of a chosen age."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from infra.db.schema import apply_platform_migrations

# A lifecycle event of the size the platform writes (a status change: about 450 bytes).
_EVENT_SQL = """
    jsonb_build_object(
        'specversion', '1.0', 'id', gen_random_uuid()::text, 'source', '/platform-service',
        'type', 'io.platform-service.tenant.status-changed.v1', 'subject', 'backlog_' || g,
        'time', now()::text, 'datacontenttype', 'application/json',
        'data', jsonb_build_object(
            'tenantId', 'backlog_' || g, 'oldStatus', 'PROVISIONING', 'newStatus', 'MIGRATING',
            'reason', NULL, 'actor', 'workflow:tenant-provision-backlog_' || g,
            'storageMode', 'SCHEMA', 'slaTier', 'PREMIUM'))
"""


def own_database(server_url: str, prefix: str = "stores") -> str:
    """A fresh database on the server of `server_url` (a superuser URL), with the platform's
    migrations applied; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    apply_platform_migrations(url)
    return url


def write_backlog(db_url: str, count: int, oldest_age: timedelta) -> None:
    """`count` unpublished events, the first `oldest_age` old and each next one 1 ms younger,
    in one INSERT ... SELECT (then ANALYZE, as autovacuum would soon)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                """
                INSERT INTO event_outbox (id, family, subject_key, name, event, created_at)
                SELECT gen_random_uuid(), 'tenants', 'backlog_' || g, 'status-changed', {event},
                       now() - %(oldest)s + g * interval '1 millisecond'
                FROM generate_series(0, %(count)s - 1) AS g
                """
            ).format(event=sql.SQL(_EVENT_SQL)),
            {"oldest": oldest_age, "count": count},
        )
        conn.execute("ANALYZE event_outbox")


def write_published(db_url: str, count: int, published_age: timedelta) -> list[str]:
    """`count` events published `published_age` ago; returns their ids."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                """
                INSERT INTO event_outbox
                    (id, family, subject_key, name, event, created_at, published_at, attempts)
                SELECT gen_random_uuid(), 'tenants', 'old_' || g, 'status-changed', {event},
                       now() - %(age)s, now() - %(age)s, 1
                FROM generate_series(1, %(count)s) AS g
                RETURNING id::text
                """
            ).format(event=sql.SQL(_EVENT_SQL)),
            {"age": published_age, "count": count},
        ).fetchall()
    return [row[0] for row in rows]


def write_commands(
    db_url: str, outcome: str | None, replied_age: timedelta, count: int
) -> list[str]:
    """`count` commands with `outcome` (None: still waiting), answered `replied_age` ago."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            """
            INSERT INTO downstream_commands
                (command_id, kind, tenant_id, service, idempotency_key, attempt, sent_at,
                 outcome, outcome_attempt, replied_at, created_at)
            SELECT 'cmd-' || gen_random_uuid()::text, 'MigrateTenant', 'old_' || g,
                   'ledger-service', gen_random_uuid()::text, 1, now() - %(age)s,
                   %(outcome)s, CASE WHEN %(outcome)s::text IS NULL THEN NULL ELSE 1 END,
                   CASE WHEN %(outcome)s::text IS NULL THEN NULL ELSE now() - %(age)s END,
                   now() - %(age)s
            FROM generate_series(1, %(count)s) AS g
            RETURNING command_id
            """,
            {"outcome": outcome, "age": replied_age, "count": count},
        ).fetchall()
    return [row[0] for row in rows]


def present(db_url: str, table: str, column: str, ids: list[str]) -> int:
    """How many of `ids` are still rows of `table` (matched on `column`)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}::text = ANY(%s)").format(
                sql.Identifier(table), sql.Identifier(column)
            ),
            (ids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def median_seconds(call: Callable[[], Awaitable[Any]], times: int) -> float:
    """The median wall time of `times` sequential calls."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        took.append(time.perf_counter() - started)
    return statistics.median(took)


async def pages_fetched(
    db_url: str, table: str, read: Callable[[AsyncConnectionPool[Any]], Awaitable[Any]]
) -> int:
    """How many pages of `table` and its indexes `read` fetches (from the cache or the disk),
    run on a pool of one connection, from the server's own statistics."""

    def fetched() -> int:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                """
                SELECT sum(pg_stat_get_blocks_fetched(oid)) FROM pg_class
                WHERE oid = %(t)s::regclass
                   OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %(t)s::regclass)
                """,
                {"t": table},
            ).fetchone()
        assert row is not None
        return int(row[0])

    async with AsyncConnectionPool(db_url, min_size=1, max_size=1) as pool:

        async def flush() -> None:
            # A backend reports its counters when idle, at most once a second, unless forced.
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_stat_force_next_flush()")

        await flush()
        before = fetched()
        await read(pool)
        await flush()
        return fetched() - before
