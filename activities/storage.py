"""Activity that creates a tenant's schema or database and records its JDBC URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import NoReturn

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures, transition
from infra.db.errors import ErrorKind, classify, sqlstate
from infra.db.repository import TenantLeaving, TenantRepository
from infra.db.storage import StorageAdmin
from infra.limits import NoSlot, ServerLimits, remaining_budget, server_key
from infra.slots import LOCAL_SLOT_WAIT
from infra.telemetry.metrics import storage_error
from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType, summarize
from tenancy.models import StorageLocation

# What an attempt keeps for the DDL itself when it waits for a slot (start-to-close is 2 min).
DDL_RESERVE = timedelta(seconds=30)
_log = logging.getLogger(__name__)


# Well inside the heartbeat timeout of workflows/options.py CREATE_STORAGE.
HEARTBEAT_INTERVAL = timedelta(seconds=2)


@asynccontextmanager
async def heartbeating(interval: timedelta) -> AsyncIterator[None]:
    """Heartbeat every `interval` while the body runs: CREATE DATABASE can take long, and a
    silent activity is only found dead at its start-to-close timeout."""

    async def beat() -> None:
        # A local attempt runs inside its workflow task, which the worker keeps alive itself.
        if activity.info().is_local:
            return
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
        """Create the storage unless it exists, then record its `jdbcUrl`.

        A transient failure (see `infra.db.errors`) is retried for as long as it lasts and
        shown in the tenant's `statusReason` meanwhile; a permanent one fails the step."""
        server = server_key(self._admin.locate(request.tenant_id, request.mode).jdbc_url)
        local = activity.info().is_local
        # A local attempt waits briefly for a slot, then declines: the regular activity waits
        # in the task queue instead.
        budget = LOCAL_SLOT_WAIT if local else remaining_budget(DDL_RESERVE)
        try:
            async with (
                heartbeating(HEARTBEAT_INTERVAL),
                self._limits.slot(server, budget),
                self._tenants.claim_storage(request.tenant_id),
            ):
                location = await self._admin.ensure(request.tenant_id, request.mode)
        except NoSlot as exc:
            if local:
                raise ApplicationError(
                    f"no free storage slot on {server} in this worker: {exc}",
                    type=FailureType.LOCAL_DECLINED,
                ) from None
            await self._transient(request, f"throttled: {exc}", "throttled")
        except TenantLeaving:
            raise ApplicationError(
                f"the deletion of tenant {request.tenant_id} was asked; its storage is not created",
                type=FailureType.PROVISION_CANCELLED,
                non_retryable=True,
            ) from None
        except Exception as exc:
            code = sqlstate(exc) or "none"
            error = summarize(str(exc) or type(exc).__name__)
            if classify(exc) is ErrorKind.PERMANENT:
                storage_error(activity.metric_meter(), ErrorKind.PERMANENT.value, code)
                raise ApplicationError(
                    f"storage server refused: {error}"
                    if isinstance(exc, psycopg.Error)
                    else f"storage creation failed: {type(exc).__name__}: {error}",
                    type=FailureType.STORAGE_FORBIDDEN,
                    non_retryable=True,
                ) from None
            await self._transient(request, error, code)
        # Retried when transient (the DDL is idempotent); a permanent failure would fail the
        # same way on every retry.
        with metadata_failures("jdbcUrl"):
            await self._tenants.set_jdbc_url(request.tenant_id, location.jdbc_url)
        if request.then_status is not None:
            # The status the run asked for once its storage is recorded, in this attempt
            # rather than in a task of its own.
            await transition(self._tenants, request.tenant_id, request.then_status)
        return location

    async def _transient(self, request: CreateStorageInput, error: str, code: str) -> NoReturn:
        """Count the failure, show it on the tenant (best effort: the metadata database may
        be down as well, which must not change how the attempt fails) and fail retryably."""
        storage_error(activity.metric_meter(), ErrorKind.TRANSIENT.value, code)
        reason = f"storage creation failed, retrying: {error}"
        try:
            await self._tenants.note_provisioning_problem(request.tenant_id, reason)
        except Exception as exc:
            _log.warning("could not record the storage failure of %s: %s", request.tenant_id, exc)
        raise ApplicationError(reason, type=FailureType.STORAGE_FAILED)
