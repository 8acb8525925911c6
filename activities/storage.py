"""Activity that creates a tenant's schema or database and records its JDBC URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType, summarize
from tenancy.limits import NoSlot, ServerLimits, remaining_budget, server_key
from tenancy.models import StorageLocation
from tenancy.repository import TenantRepository
from tenancy.storage import PERMANENT_STORAGE_ERRORS, StorageAdmin

# What an attempt keeps for the DDL itself when it waits for a slot (start-to-close is 2 min).
DDL_RESERVE = timedelta(seconds=30)


# Well inside the heartbeat timeout of workflows/options.py CREATE_STORAGE.
HEARTBEAT_INTERVAL = timedelta(seconds=2)


@asynccontextmanager
async def heartbeating(interval: timedelta) -> AsyncIterator[None]:
    """Heartbeat every `interval` while the body runs: CREATE DATABASE can take long, and a
    silent activity is only found dead at its start-to-close timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval.total_seconds())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class StorageActivities:
    """Bound to the storage server's admin pool, the metadata repository and the cap on
    concurrent creations per storage server."""

    def __init__(
        self, admin: StorageAdmin, tenants: TenantRepository, limits: ServerLimits
    ) -> None:
        self._admin = admin
        self._tenants = tenants
        self._limits = limits

    @activity.defn(name="create_storage")
    async def create_storage(self, request: CreateStorageInput) -> StorageLocation:
        """Create the storage unless it exists, then record its `jdbcUrl`."""
        server = server_key(self._admin.locate(request.tenant_id, request.mode).jdbc_url)
        try:
            async with (
                heartbeating(HEARTBEAT_INTERVAL),
                self._limits.slot(server, remaining_budget(DDL_RESERVE)),
            ):
                location = await self._admin.ensure(request.tenant_id, request.mode)
        except NoSlot as exc:
            raise ApplicationError(
                f"storage creation throttled: {exc}", type=FailureType.STORAGE_FAILED
            ) from None
        except PERMANENT_STORAGE_ERRORS as exc:
            raise ApplicationError(
                f"storage server refused: {summarize(str(exc))}",
                type=FailureType.STORAGE_FORBIDDEN,
                non_retryable=True,
            ) from None
        except psycopg.Error as exc:
            # Connection loss, a busy template database, a lock timeout: worth another try.
            raise ApplicationError(
                f"storage creation failed: {summarize(str(exc))}",
                type=FailureType.STORAGE_FAILED,
            ) from None
        await self._tenants.set_jdbc_url(request.tenant_id, location.jdbc_url)
        return location
