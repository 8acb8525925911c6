"""Backups of tenant storage with the wheel's pg_dump on the real PostgreSQL, taken as the
platform's own role (as deployed), of tables the services' roles own."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors, sql
from psycopg_pool import AsyncConnectionPool

from devstack.roles import Layout
from infra.db.backup import (
    APPLICATION_NAME,
    Backup,
    BackupFailed,
    StorageNotFound,
    take_backup,
)
from infra.db.binaries import pg_program
from infra.db.storage import StorageAdmin
from tenancy.models import StorageLocation, StorageMode
from tests.conftest import PLATFORM_ROLE, unique_id, with_database
from tests.support.polling import eventually
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BACKEND, AUTH = "backend_service", "auth_service"
MODES = [StorageMode.SCHEMA, StorageMode.DATABASE]
TIMEOUT = 30.0


@pytest.fixture
def platform_url(platform_role_urls: tuple[str, str]) -> str:
    """The storage server as the platform's role: what the worker gives `take_backup`."""
    return platform_role_urls[1]


@pytest_asyncio.fixture(loop_scope="session")
async def admin(platform_url: str) -> AsyncIterator[StorageAdmin]:
    """Creates tenant storage as the platform's role, granted to both services' roles."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        platform_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        yield StorageAdmin(pool, platform_url, (BACKEND, AUTH))


@contextmanager
def as_service(
    service_database_urls: dict[str, str], role: str, location: StorageLocation
) -> Iterator[psycopg.Connection[Any]]:
    """A connection as a service's role to the tenant's storage, its schema on the path."""
    url = service_database_urls[role.replace("_", "-")]
    with psycopg.connect(with_database(url, location.database), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema_name)))
        yield conn


def restore_list(path: str) -> str:
    """`pg_restore --list`: the archive's table of contents."""
    done = subprocess.run(
        [str(pg_program("pg_restore")), "--list", path], check=True, capture_output=True
    )
    return done.stdout.decode()


def restore_data(path: str) -> str:
    """The archive's rows, as the SQL script pg_restore would run."""
    done = subprocess.run(
        [str(pg_program("pg_restore")), "--data-only", "--file=-", path],
        check=True,
        capture_output=True,
    )
    return done.stdout.decode()


def assert_matches_file(backup: Backup) -> None:
    content = Path(backup.path).read_bytes()
    assert backup.size_bytes == len(content) > 0
    assert backup.sha256 == hashlib.sha256(content).hexdigest()


async def tenant_with_tables(
    admin: StorageAdmin, urls: dict[str, str], mode: StorageMode
) -> StorageLocation:
    """Tenant storage holding a table of each service, each with a row."""
    location = await admin.ensure(unique_id("bak"), mode)
    with as_service(urls, BACKEND, location) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO accounts VALUES (4242, 'backed-up-row')")
    with as_service(urls, AUTH, location) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY)")
        conn.execute("INSERT INTO users VALUES (1)")
    return location


@pytest.mark.parametrize("mode", MODES)
async def test_a_backup_as_the_platform_role_holds_the_services_tables_and_rows(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    tmp_path: Path,
    mode: StorageMode,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, mode)
    neighbour = await admin.ensure(unique_id("bak"), mode)
    with as_service(service_database_urls, BACKEND, neighbour) as conn:
        conn.execute("CREATE TABLE neighbour_secret (id int)")
    label = f"tenant-{location.schema_name}-20261130T120000Z"

    backup = await take_backup(
        platform_url, location, tmp_path / "backups", label=label, timeout=TIMEOUT
    )

    assert re.fullmatch(rf"{re.escape(label)}\.[0-9a-f]{{8}}\.dump", Path(backup.path).name)
    assert Path(backup.path).parent == tmp_path / "backups"
    assert os.listdir(tmp_path / "backups") == [Path(backup.path).name]
    assert_matches_file(backup)
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert Path(backup.path).stat().st_mode & 0o777 == 0o600
    listing = restore_list(backup.path)
    # Owners are kept, so a superuser's restore gives each service its tables back.
    assert f"TABLE {location.schema_name} accounts {BACKEND}" in listing
    assert f"TABLE {location.schema_name} users {AUTH}" in listing
    assert "neighbour_secret" not in listing
    assert "4242\tbacked-up-row" in restore_data(backup.path)


async def test_a_superusers_restore_brings_the_schema_back_in_the_same_layout(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    pg_server_url: str,
    tmp_path: Path,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, StorageMode.SCHEMA)
    backup = await take_backup(platform_url, location, tmp_path, label="layout", timeout=TIMEOUT)
    storage_url = with_database(pg_server_url, location.database)
    schema = sql.Identifier(location.schema_name)
    with psycopg.connect(platform_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))

    subprocess.run(
        [
            str(pg_program("pg_restore")),
            "--exit-on-error",
            f"--dbname={storage_url}",
            backup.path,
        ],
        check=True,
        capture_output=True,
    )

    with psycopg.connect(storage_url) as conn:
        owners = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s ORDER BY 1",
            (location.schema_name,),
        ).fetchall()
        schema_owner = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
            (location.schema_name,),
        ).fetchone()
    assert owners == [("accounts", BACKEND), ("users", AUTH)]
    assert schema_owner == (PLATFORM_ROLE,)
    # The services' grants came back with the schema: each uses its own table again.
    with as_service(service_database_urls, BACKEND, location) as conn:
        assert conn.execute("SELECT note FROM accounts").fetchall() == [("backed-up-row",)]
        conn.execute("CREATE TABLE after_restore (id int)")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO accounts VALUES (1, 'x')",
        "UPDATE accounts SET note = 'x'",
        "DELETE FROM accounts",
        "TRUNCATE accounts",
        "ALTER TABLE accounts ADD COLUMN extra int",
    ],
)
async def test_the_platform_role_reads_but_cannot_write_a_services_table(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    statement: str,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, StorageMode.SCHEMA)

    with psycopg.connect(with_database(platform_url, location.database)) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema_name)))
        assert conn.execute("SELECT id FROM accounts").fetchall() == [(4242,)]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)


async def test_the_platform_role_drops_a_tenant_database_a_service_is_connected_to(
    admin: StorageAdmin, service_database_urls: dict[str, str], platform_url: str
) -> None:
    location = await admin.ensure(unique_id("bak"), StorageMode.DATABASE)

    with (
        as_service(service_database_urls, BACKEND, location) as held,
        psycopg.connect(platform_url, autocommit=True) as conn,
    ):
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(location.database))
        )
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")

    assert not await admin.exists(location)


async def test_a_repeated_backup_writes_a_file_of_its_own_and_leaves_the_first_whole(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    tmp_path: Path,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, StorageMode.SCHEMA)
    first = await take_backup(platform_url, location, tmp_path, label="again", timeout=TIMEOUT)
    with as_service(service_database_urls, BACKEND, location) as conn:
        conn.execute("INSERT INTO accounts SELECT g, 'more' FROM generate_series(1, 500) g")

    second = await take_backup(platform_url, location, tmp_path, label="again", timeout=TIMEOUT)

    # Two attempts of one backup may overlap: neither replaces the other's file, so each
    # sha256 stays true of the file it names.
    assert second.path != first.path
    assert second.sha256 != first.sha256
    assert_matches_file(first)
    assert_matches_file(second)
    assert sorted(os.listdir(tmp_path)) == sorted([Path(first.path).name, Path(second.path).name])


@pytest.mark.parametrize("mode", MODES)
async def test_missing_storage_fails_permanently_and_leaves_nothing(
    platform_url: str, database_roles: Layout, tmp_path: Path, mode: StorageMode
) -> None:
    name = unique_id("bak_missing")
    location = StorageLocation(
        mode=mode,
        database=name if mode is StorageMode.DATABASE else database_roles.storage_database,
        schema_name=name if mode is StorageMode.SCHEMA else "public",
        jdbc_url="jdbc:postgresql://unused/unused",
    )

    with pytest.raises(StorageNotFound, match=rf"{name} .*does not exist") as caught:
        await take_backup(platform_url, location, tmp_path, label="missing", timeout=TIMEOUT)

    assert caught.value.transient is False
    assert os.listdir(tmp_path) == []


async def test_an_unreachable_server_is_a_transient_failure(tmp_path: Path) -> None:
    url = f"postgresql://platform:s3cret-pw@127.0.0.1:{free_port()}/tenants"
    location = StorageLocation(
        mode=StorageMode.SCHEMA, database="tenants", schema_name="tenant_x", jdbc_url="jdbc:x"
    )

    with pytest.raises(BackupFailed, match="cannot reach the storage server") as caught:
        await take_backup(url, location, tmp_path, label="unreachable", timeout=TIMEOUT)

    assert caught.value.transient is True
    assert "s3cret-pw" not in str(caught.value)
    assert os.listdir(tmp_path) == []


async def test_a_refusing_pg_dump_fails_permanently_with_its_reason_and_leaves_nothing(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    tmp_path: Path,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, StorageMode.SCHEMA)
    # Row-level security would hide rows from the platform: pg_dump refuses a partial dump.
    with as_service(service_database_urls, BACKEND, location) as conn:
        conn.execute("ALTER TABLE accounts ENABLE ROW LEVEL SECURITY")

    with pytest.raises(BackupFailed, match=r"exited with 1: .*row-level security") as caught:
        await take_backup(platform_url, location, tmp_path, label="refused", timeout=TIMEOUT)

    assert caught.value.transient is False
    assert "\n" not in str(caught.value)
    assert os.listdir(tmp_path) == []


async def test_a_dump_past_its_timeout_is_killed_and_leaves_nothing(
    admin: StorageAdmin,
    service_database_urls: dict[str, str],
    platform_url: str,
    pg_server_url: str,
    tmp_path: Path,
) -> None:
    location = await tenant_with_tables(admin, service_database_urls, StorageMode.SCHEMA)

    async def dumps() -> int:
        def count() -> int:
            with psycopg.connect(pg_server_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (APPLICATION_NAME,),
                ).fetchone()
                assert row is not None
                return int(row[0])

        return await asyncio.to_thread(count)

    with (
        as_service(service_database_urls, BACKEND, location) as holder,
        holder.transaction(),
    ):
        # pg_dump waits for this lock until the timeout ends it.
        holder.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(BackupFailed, match="did not finish within 1s") as caught:
            await take_backup(platform_url, location, tmp_path, label="slow", timeout=1.0)
        # Its server session ends too, while the lock is still held.
        await eventually(dumps, lambda n: n == 0, timeout=10)

    assert caught.value.transient is True
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "label", ["", "../escape", "a/b", "tenant acme", "tenant\nacme", "é", "x" * 201]
)
async def test_an_invalid_label_is_refused_before_anything_runs(tmp_path: Path, label: str) -> None:
    location = StorageLocation(
        mode=StorageMode.SCHEMA, database="tenants", schema_name="tenant_x", jdbc_url="jdbc:x"
    )

    with pytest.raises(ValueError, match="backup label"):
        await take_backup(
            "postgresql://nobody@127.0.0.1:1/tenants",
            location,
            tmp_path / "backups",
            label=label,
            timeout=TIMEOUT,
        )

    assert not (tmp_path / "backups").exists()


async def test_a_missing_pg_dump_or_an_unwritable_directory_fail_permanently(
    admin: StorageAdmin, platform_url: str, tmp_path: Path
) -> None:
    location = await admin.ensure(unique_id("bak"), StorageMode.SCHEMA)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(BackupFailed, match="cannot run") as no_binary:
        await take_backup(
            platform_url,
            location,
            tmp_path / "backups",
            label="nobin",
            timeout=TIMEOUT,
            pg_dump=tmp_path / "no-such-pg_dump",
        )
    with pytest.raises(BackupFailed, match="cannot write a backup into") as no_directory:
        await take_backup(
            platform_url, location, blocker / "backups", label="nodir", timeout=TIMEOUT
        )

    assert no_binary.value.transient is False
    assert no_directory.value.transient is False
    assert os.listdir(tmp_path / "backups") == []
    assert sorted(os.listdir(tmp_path)) == ["a-file", "backups"]
