"""A deletion repository whose backup record waits for the test: two attempts of one backup
(a zombie cut off from Temporal and its retry) can then be interleaved exactly."""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import AsyncConnectionPool

from infra.db.deletions import DeletionRepository
from tenancy.models import BackupRecord


class HeldBackupRecord(DeletionRepository):
    """`record_backup` sets `reached` (the dump is on disk) and records once `release` is set."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def record_backup(self, tenant_id: str, backup: BackupRecord, actor: str) -> bool:
        """Wait for the test's go, then record as the real repository does."""
        self.reached.set()
        await self.release.wait()
        return await super().record_backup(tenant_id, backup, actor)
