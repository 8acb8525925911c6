"""Moving a tenant's storage between two real PostgreSQL servers (infra.db.moves), in both
storage modes, with the platform's own role (no superuser) on each: the freeze closes the
services' roles out of the source and ends their sessions holding it, the copy gives the target
the same tables, rows, sequences, indexes, constraints, owners and grants, verify compares every
table, and unfreeze lets the services back.

The two servers of `extra_pg_servers` (tests.support.storage_fleet; `fleet_stage` without the
Temporal server these tests do not need): the first is the source, the second the target."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors, sql

from infra.db.moves import CopyFailed, copy_storage, freeze, unfreeze, verify
from infra.db.storage import lock_storage
from tenancy.models import StorageLocation, StorageMode
from tests.support.move_storage import (
    AUTH,
    BACKEND,
    FILLED_ROWS,
    FILLED_TABLES,
    SERVICE_ROLES,
    StorageSide,
    as_service,
    fill_storage,
    qualified,
    service_url,
    storage_grants,
    storage_side,
    storage_snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MODES = [StorageMode.SCHEMA, StorageMode.DATABASE]
TIMEOUT = 60.0


@pytest_asyncio.fixture(loop_scope="session")
async def sides(extra_pg_servers: list[str]) -> AsyncIterator[tuple[StorageSide, StorageSide]]:
    """The source and the target server."""
    async with (
        storage_side(extra_pg_servers[0]) as source,
        storage_side(extra_pg_servers[1]) as target,
    ):
        yield source, target


async def filled_tenant(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> StorageLocation:
    """A tenant whose storage on the source holds both services' objects and rows, and whose
    storage on the target exists, empty, granted as at provisioning (a move's PREPARING)."""
    source, target = sides
    tenant_id = f"mv{uuid.uuid4().hex[:10]}"
    location = await source.admin.ensure(tenant_id, mode)
    await target.admin.ensure(tenant_id, mode)
    fill_storage(source, location)
    return location


def count_rows(side: StorageSide, location: StorageLocation, table: str) -> int:
    with as_service(side, BACKEND, location) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(location, table)))
        return int((row.fetchone() or (0,))[0])


def assert_closed_to(side: StorageSide, role: str, location: StorageLocation) -> None:
    """A new session of `role` can neither read nor write the tenant's storage on `side`."""
    if location.mode is StorageMode.DATABASE:
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(service_url(side, role, location)).close()
        return
    with psycopg.connect(service_url(side, role, location), autocommit=True) as conn:
        for statement in ("SELECT count(*) FROM {}", "INSERT INTO {} DEFAULT VALUES"):
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema"):
                conn.execute(sql.SQL(statement).format(qualified(location, "accounts")))


@pytest.mark.parametrize("mode", MODES)
async def test_freeze_closes_the_services_out_and_ends_a_session_in_flight_then_unfreeze_reopens(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> None:
    source, _ = sides
    location = await filled_tenant(sides, mode)
    # A write in flight: its row is inserted and locked, not committed.
    in_flight = psycopg.connect(service_url(source, BACKEND, location))
    in_flight.execute(
        sql.SQL("INSERT INTO {} (account_id, amount) VALUES (1, 9)").format(
            qualified(location, "orders")
        )
    )
    # A session of the other service that wrote with a prepared statement, then went idle
    # (no lock held, the plan kept).
    idle = psycopg.connect(service_url(source, AUTH, location), autocommit=True)
    prepared = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(qualified(location, "accounts"))
    idle.execute(prepared, ("before the freeze",), prepare=True)

    try:
        await freeze(source.platform_url, location, SERVICE_ROLES)
        await freeze(source.platform_url, location, SERVICE_ROLES)

        with pytest.raises(psycopg.OperationalError):
            in_flight.commit()
        with pytest.raises(psycopg.Error) as refused:
            idle.execute(prepared, ("after the freeze",), prepare=True)
    finally:
        in_flight.close()
        idle.close()

    if mode is StorageMode.DATABASE:
        # Every session on the tenant's database is ended.
        assert isinstance(refused.value, psycopg.OperationalError)
    else:
        # Sessions holding nothing of the tenant stay (they may serve others), refused: the
        # prepared plan is planned, and checked, again.
        assert isinstance(refused.value, errors.InsufficientPrivilege)
    for role in SERVICE_ROLES:
        assert_closed_to(source, role, location)
    assert storage_grants(source, location) == {
        BACKEND: (mode is StorageMode.SCHEMA, False, False),
        AUTH: (mode is StorageMode.SCHEMA, False, False),
    }

    await unfreeze(source.platform_url, location, SERVICE_ROLES)

    assert storage_grants(source, location) == {
        BACKEND: (True, True, True),
        AUTH: (True, True, True),
    }
    with as_service(source, BACKEND, location) as conn:
        conn.execute("INSERT INTO orders (account_id, amount) VALUES (2, 3)")
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (6,)
    # The write in flight at the freeze was never committed; the one after unfreeze was.
    assert count_rows(source, location, "orders") == FILLED_ROWS["orders"] + 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_copy_gives_the_target_the_same_storage_and_verify_finds_a_difference(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> None:
    source, target = sides
    location = await filled_tenant(sides, mode)
    await freeze(source.platform_url, location, SERVICE_ROLES)

    report = await copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)

    copied = storage_snapshot(target, location)
    assert copied == storage_snapshot(source, location)
    owners = {name: owner for name, kind, owner in copied["relations"] if kind == "r"}
    assert owners == FILLED_TABLES
    assert {name: len(rows) for name, rows in copied["rows"].items()} == FILLED_ROWS
    # Each sequence where its service left it: past the rows, not at them.
    assert copied["sequences"] == {"accounts_id_seq": (6, True), "orders_id_seq": (23, True)}
    assert {name for name, _ in copied["indexes"]} == {
        "accounts_pkey",
        "orders_pkey",
        "orders_by_account",
    }
    assert {name for _, name, _ in copied["constraints"]} >= {
        "accounts_name_present",
        "orders_amount_positive",
        "orders_account_id_fkey",
        "order_notes_order_id_fkey",
    }
    assert ("orders", BACKEND, AUTH, "SELECT") in copied["grants"]
    assert ("accounts", AUTH, BACKEND, "REFERENCES") in copied["grants"]
    assert report.tables == len(FILLED_TABLES)
    assert report.bytes_dumped > 0
    assert report.seconds > 0
    # The target's own grants are those of provisioning, not the frozen source's.
    assert storage_grants(target, location) == {
        BACKEND: (True, True, True),
        AUTH: (True, True, True),
    }
    assert await verify(source.platform_url, target.platform_url, location) == []

    # The services work on the copy as on the original: owners, grants, sequences, checks.
    with as_service(target, BACKEND, location) as conn:
        added = conn.execute(
            "INSERT INTO orders (account_id, amount) VALUES (3, 1) RETURNING id"
        ).fetchone()
        assert added == (24,)
        with pytest.raises(errors.CheckViolation):
            conn.execute("INSERT INTO orders (account_id, amount) VALUES (3, -1)")
        with pytest.raises(errors.ForeignKeyViolation):
            conn.execute("INSERT INTO orders (account_id, amount) VALUES (99, 1)")
    with as_service(target, AUTH, location) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (21,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM orders")
        conn.execute("CREATE TABLE only_here (id int)")

    mismatches = await verify(source.platform_url, target.platform_url, location)

    assert {m.table: (m.source_rows, m.target_rows) for m in mismatches} == {
        "only_here": (None, 0),
        "orders": (FILLED_ROWS["orders"], FILLED_ROWS["orders"] + 1),
    }
    assert [m.source_checksum for m in mismatches if m.table == "only_here"] == [None]

    # A changed row, same count: named by its checksum alone.
    with as_service(target, BACKEND, location) as conn:
        conn.execute("DELETE FROM orders WHERE id = 24")
        conn.execute("UPDATE orders SET amount = amount + 1 WHERE id = 7")
    with as_service(target, AUTH, location) as conn:
        conn.execute("DROP TABLE only_here")

    (changed,) = await verify(source.platform_url, target.platform_url, location)

    assert changed.table == "orders"
    assert changed.source_rows == changed.target_rows == FILLED_ROWS["orders"]
    assert changed.source_checksum != changed.target_checksum


@pytest.mark.parametrize("mode", MODES)
async def test_a_repeated_copy_onto_a_partly_copied_target_ends_equal(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> None:
    source, target = sides
    location = await filled_tenant(sides, mode)
    await freeze(source.platform_url, location, SERVICE_ROLES)
    await copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)
    # What an attempt cut short may leave: some tables, some rows, something stray.
    with as_service(target, BACKEND, location) as conn:
        conn.execute("DROP TABLE order_notes")
        conn.execute("DELETE FROM orders WHERE id > 10")
        conn.execute("CREATE TABLE stray (id serial PRIMARY KEY)")
        conn.execute("CREATE TYPE mood AS ENUM ('calm')")
        conn.execute("CREATE FUNCTION twice(int, text[]) RETURNS int LANGUAGE sql AS 'SELECT 2'")

    report = await copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)

    assert report.tables == len(FILLED_TABLES)
    assert storage_snapshot(target, location) == storage_snapshot(source, location)
    assert await verify(source.platform_url, target.platform_url, location) == []
    with psycopg.connect(service_url(target, BACKEND, location)) as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s AND t.typname = 'mood' "
            "UNION ALL SELECT count(*) FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = 'twice'",
            (location.schema_name, location.schema_name),
        ).fetchall()
    assert leftovers == [(0,), (0,)]
    # The storage and its grants were kept: the services still create there.
    assert storage_grants(target, location) == {
        BACKEND: (True, True, True),
        AUTH: (True, True, True),
    }
    with as_service(target, AUTH, location) as conn:
        conn.execute("CREATE TABLE afterwards (id int)")


@pytest.mark.parametrize("mode", MODES)
async def test_a_copy_without_storage_on_either_side_fails_permanently_naming_it(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> None:
    source, target = sides
    tenant_id = f"mv{uuid.uuid4().hex[:10]}"
    location = await source.admin.ensure(tenant_id, mode)
    fill_storage(source, location)
    missing = source.admin.locate(f"mv{uuid.uuid4().hex[:10]}", mode)

    with pytest.raises(CopyFailed) as no_target:
        await copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)
    with pytest.raises(CopyFailed) as no_source:
        await copy_storage(source.platform_url, target.platform_url, missing, timeout=TIMEOUT)

    assert not no_target.value.transient
    assert f"the target's {mode.value.lower()}" in str(no_target.value)
    assert "does not exist" in str(no_target.value)
    assert not no_source.value.transient
    assert "does not exist" in str(no_source.value)


@pytest.mark.parametrize("mode", MODES)
async def test_two_copies_at_once_take_turns_and_end_equal(
    sides: tuple[StorageSide, StorageSide], mode: StorageMode
) -> None:
    source, target = sides
    location = await filled_tenant(sides, mode)
    await freeze(source.platform_url, location, SERVICE_ROLES)

    # A copy whose attempt timed out may still run when its retry starts.
    reports = await asyncio.gather(
        *(
            copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)
            for _ in range(2)
        )
    )

    assert [report.tables for report in reports] == [len(FILLED_TABLES)] * 2
    assert storage_snapshot(target, location) == storage_snapshot(source, location)
    assert await verify(source.platform_url, target.platform_url, location) == []


async def test_a_copy_waiting_past_its_timeout_fails_as_transient(
    sides: tuple[StorageSide, StorageSide],
) -> None:
    source, target = sides
    location = await filled_tenant(sides, StorageMode.SCHEMA)
    await freeze(source.platform_url, location, SERVICE_ROLES)
    # Another copy onto the same storage, still running.
    async with await psycopg.AsyncConnection.connect(target.platform_url, autocommit=True) as other:
        await lock_storage(other, location.schema_name, session=True)

        with pytest.raises(CopyFailed) as late:
            await copy_storage(source.platform_url, target.platform_url, location, timeout=1)

    assert late.value.transient
    assert "did not finish within 1s" in str(late.value)
    report = await copy_storage(source.platform_url, target.platform_url, location, timeout=TIMEOUT)
    assert report.tables == len(FILLED_TABLES)
