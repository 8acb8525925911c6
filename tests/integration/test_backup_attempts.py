"""Two attempts of one backup (`backup_storage`): a zombie attempt cut off from Temporal and its
retry, run for real against PostgreSQL with the wheel's pg_dump. Whichever records first, the
recorded backup is the file on disk, byte for byte."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.testing import ActivityEnvironment

from activities.deletion import DeletionActivities
from infra.db.deletions import DeletionRepository
from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from infra.db.storage import StorageAdmin
from infra.security.signing import CallSigner
from tenancy.contracts import BackupInput, BackupResult
from tenancy.models import BackupRecord, EventAction, StorageMode, TenantSpec
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.backups import HeldBackupRecord
from tests.support.storage import one_server_fleet

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

WAIT = 30.0


@dataclass
class Stage:
    """What the attempts share: the metadata and storage pools, and the worker's settings."""

    metadata: AsyncConnectionPool[Any]
    storage: AsyncConnectionPool[Any]
    admin: StorageAdmin
    settings: Settings
    signer: CallSigner
    http: httpx.AsyncClient

    def worker(self, deletions: DeletionRepository) -> DeletionActivities:
        """The deletion activities of one worker process."""
        fleet = one_server_fleet(
            self.admin,
            self.settings.require_storage_database_url(),
            ServerRepository(self.metadata),
        )
        return DeletionActivities(deletions, fleet, self.http, self.signer, (), self.settings)

    async def tenant_with_rows(self) -> BackupInput:
        """A tenant row and its schema holding a table with rows; the backup's input."""
        tenant_id = unique_id("bka")
        spec = TenantSpec(
            id=tenant_id, name="Backup Co", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
        )
        await TenantRepository(self.metadata).insert(spec, f"wf-{tenant_id}", "run-1", [])
        # Placed as provisioning places it: on the one server, `default`.
        settings = self.settings
        await ServerRepository(self.metadata).place(
            tenant_id, settings.storage_fleet(), settings.placement_map()
        )
        location = await self.admin.ensure(tenant_id, StorageMode.SCHEMA)
        table = sql.Identifier(location.schema_name, "accounts")
        async with self.storage.connection() as conn:
            await conn.execute(sql.SQL("CREATE TABLE {} (id int, note text)").format(table))
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'first')").format(table))
        return BackupInput(
            tenant_id=tenant_id, mode=StorageMode.SCHEMA, label=f"tenant-{tenant_id}-20261206"
        )

    async def more_rows(self, backup: BackupInput) -> None:
        """Change the tenant's data, so a later dump differs from an earlier one."""
        location = self.admin.locate(backup.tenant_id, backup.mode)
        table = sql.Identifier(location.schema_name, "accounts")
        async with self.storage.connection() as conn:
            await conn.execute(
                sql.SQL("INSERT INTO {} SELECT g, 'more' FROM generate_series(1, 2000) g").format(
                    table
                )
            )

    async def recorded(self, tenant_id: str) -> BackupRecord:
        progress = await DeletionRepository(self.metadata).progress(tenant_id)
        assert progress.backup is not None
        return progress.backup

    async def backup_events(self, tenant_id: str) -> int:
        events = await TenantRepository(self.metadata).events(tenant_id)
        return sum(event.action is EventAction.BACKUP_TAKEN for event in events)


@pytest_asyncio.fixture(loop_scope="session")
async def stage(
    platform_role_urls: tuple[str, str], keys_dir: Path, tmp_path: Path
) -> AsyncIterator[Stage]:
    metadata_url, storage_url = platform_role_urls
    settings = Settings(
        database_url=metadata_url,
        storage_database_url=storage_url,
        deletion_backup_dir=tmp_path / "backups",
        events_backend="none",
    )
    metadata: AsyncConnectionPool[Any] = AsyncConnectionPool(
        metadata_url, min_size=1, max_size=4, open=False
    )
    storage: AsyncConnectionPool[Any] = AsyncConnectionPool(
        storage_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    async with metadata, storage, httpx.AsyncClient() as http:
        yield Stage(
            metadata,
            storage,
            StorageAdmin(storage, storage_url, ()),
            settings,
            CallSigner(keys_dir / "platform-signing.pem", settings.downstream_token_ttl),
            http,
        )


def attempt(number: int) -> ActivityEnvironment:
    """An activity context as the worker gives attempt `number`."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number)
    return env


def assert_is_the_file_on_disk(backup: BackupRecord) -> None:
    content = Path(backup.path).read_bytes()
    assert hashlib.sha256(content).hexdigest() == backup.sha256
    assert len(content) == backup.size_bytes


def dumps_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("first_to_record", ["zombie", "retry"])
async def test_a_zombie_attempt_and_its_retry_leave_the_recorded_file_on_disk(
    stage: Stage, first_to_record: str
) -> None:
    backup = await stage.tenant_with_rows()
    zombie_deletions = HeldBackupRecord(stage.metadata)
    retry_deletions = HeldBackupRecord(stage.metadata)
    # The zombie has dumped and is about to record when its retry starts on another worker.
    zombie = asyncio.create_task(
        attempt(1).run(stage.worker(zombie_deletions).backup_storage, backup)
    )
    await asyncio.wait_for(zombie_deletions.reached.wait(), WAIT)
    await stage.more_rows(backup)
    retry = asyncio.create_task(
        attempt(2).run(stage.worker(retry_deletions).backup_storage, backup)
    )
    await asyncio.wait_for(retry_deletions.reached.wait(), WAIT)

    order = (
        [(zombie_deletions, zombie), (retry_deletions, retry)]
        if first_to_record == "zombie"
        else [(retry_deletions, retry), (zombie_deletions, zombie)]
    )
    results: list[BackupResult] = []
    for deletions, task in order:
        deletions.release.set()
        results.append(await asyncio.wait_for(task, WAIT))

    recorded = await stage.recorded(backup.tenant_id)
    assert_is_the_file_on_disk(recorded)
    assert [result.backup for result in results] == [recorded, recorded]
    # The attempt that lost the record removed its own dump; nothing else is left behind.
    assert dumps_in(Path(recorded.path).parent) == [Path(recorded.path).name]
    assert await stage.backup_events(backup.tenant_id) == 1


async def test_concurrent_attempts_record_one_backup_that_is_on_disk(stage: Stage) -> None:
    backup = await stage.tenant_with_rows()
    await stage.more_rows(backup)

    results = await asyncio.gather(
        *(
            attempt(n).run(stage.worker(DeletionRepository(stage.metadata)).backup_storage, backup)
            for n in (1, 2, 3)
        )
    )

    recorded = await stage.recorded(backup.tenant_id)
    assert_is_the_file_on_disk(recorded)
    assert [result.backup for result in results] == [recorded] * 3
    assert dumps_in(Path(recorded.path).parent) == [Path(recorded.path).name]
    assert await stage.backup_events(backup.tenant_id) == 1


async def test_a_later_attempt_reuses_the_recorded_backup(stage: Stage) -> None:
    backup = await stage.tenant_with_rows()
    first = await attempt(1).run(
        stage.worker(DeletionRepository(stage.metadata)).backup_storage, backup
    )
    await stage.more_rows(backup)

    second = await attempt(2).run(
        stage.worker(DeletionRepository(stage.metadata)).backup_storage, backup
    )

    recorded = await stage.recorded(backup.tenant_id)
    assert first.backup == second.backup == recorded
    assert_is_the_file_on_disk(recorded)
    assert dumps_in(Path(recorded.path).parent) == [Path(recorded.path).name]
    assert await stage.backup_events(backup.tenant_id) == 1
