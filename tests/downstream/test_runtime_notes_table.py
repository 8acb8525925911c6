"""The runtime endpoint's notes table is made on a tenant's first write; first writes made at
once (a writer starting on a fresh tenant) make it once, none of them fails (real PostgreSQL,
the service's own role)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from examples.downstream_service.runtime import _ensure_table, _table
from tests.downstream.helpers import Payload, Storage, with_database
from tests.support.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _make(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        _ensure_table(conn, _table("backend-service", schema))


async def test_two_first_writes_at_once_make_the_notes_table_once(
    schema_tenant: Payload, tenant_id: str, storage: Storage
) -> None:
    schema = f"tenant_{tenant_id}"
    url = with_database(storage.service_url(), storage.database)
    with (
        psycopg.connect(url) as first,
        psycopg.connect(url) as second,
        psycopg.connect(storage.url(storage.database), autocommit=True) as watcher,
    ):

        async def second_waits() -> bool:
            row = watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (second.info.backend_pid,),
            ).fetchone()
            return row is not None

        with first.transaction():
            _ensure_table(first, _table("backend-service", schema))
            # The second writer gets as far as it can while the first has not committed.
            racing = asyncio.create_task(asyncio.to_thread(_make, second, schema))
            await eventually(second_waits, bool, timeout=10)
        await racing
        tables = watcher.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (schema, "backend_service_notes"),
        ).fetchone()

    assert tables == (1,)
