"""Activity that creates a tenant's schema or database and records its JDBC URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import NoReturn

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures, transition
from infra.background import in_background
from infra.db.errors import ErrorKind, classify, sqlstate
from infra.db.fleet import StorageFleet
from infra.db.repository import TenantLeaving, TenantRepository
from infra.db.servers import NoRoom, ServerRepository, UnknownServer
from infra.limits import NoSlot, ServerLimits, remaining_budget
from infra.slots import LOCAL_SLOT_WAIT
from infra.telemetry.metrics import storage_error
from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType, summarize
from tenancy.models import SlaTier, StorageLocation

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

    async with in_background(beat(), "heartbeat"):
        yield


class StorageActivities:
    """Bound to the storage servers' admins, the metadata repositories, the placement of
    tiers into pools and the cap on concurrent creations per storage server."""

    def __init__(
        self,
        fleet: StorageFleet,
        servers: ServerRepository,
        tenants: TenantRepository,
        limits: ServerLimits,
        placement: Mapping[SlaTier, str],
    ) -> None:
        self._fleet = fleet
        self._servers = servers
        self._tenants = tenants
        self._limits = limits
        self._placement = dict(placement)

    async def _place(self, tenant_id: str) -> str:
        """The tenant's server: the one its row names, or the one placement picks now."""
        try:
            with metadata_failures("storage placement"):
                return await self._servers.place(tenant_id, self._fleet.servers, self._placement)
        except NoRoom as exc:
            raise ApplicationError(
                str(exc), type=FailureType.NO_STORAGE_ROOM, non_retryable=True
            ) from None

    @activity.defn(name="create_storage")
    async def create_storage(self, request: CreateStorageInput) -> StorageLocation:
        """Create the storage unless it exists, then record its `jdbcUrl`.

        A transient failure (see `infra.db.errors`) is retried for as long as it lasts and
        shown in the tenant's `statusReason` meanwhile; a permanent one fails the step."""
        local = activity.info().is_local
        try:
            name = await self._place(request.tenant_id)
            admin = self._fleet.admin(name)
        except TenantLeaving:
            raise _leaving(request.tenant_id) from None
        except UnknownServer as exc:
            # Refused at start (see infra.fleet_check); a worker with an older list may run.
            raise ApplicationError(
                f"{exc}: the tenant's storage is on it", type=FailureType.STORAGE_FAILED
            ) from None
        # Caps are per server: each admits its own creations.
        server = name
        # A local attempt waits briefly for a slot, then declines: the regular activity waits
        # in the task queue instead.
        budget = LOCAL_SLOT_WAIT if local else remaining_budget(DDL_RESERVE)
        try:
            async with (
                heartbeating(HEARTBEAT_INTERVAL),
                self._limits.slot(server, budget),
                self._tenants.claim_storage(request.tenant_id),
            ):
                location = await admin.ensure(request.tenant_id, request.mode)
        except NoSlot as exc:
            if local:
                raise ApplicationError(
                    f"no free storage slot on {server} in this worker: {exc}",
                    type=FailureType.LOCAL_DECLINED,
                ) from None
            await self._transient(request, name, f"throttled: {exc}", "throttled")
        except TenantLeaving:
            raise _leaving(request.tenant_id) from None
        except Exception as exc:
            code = sqlstate(exc) or "none"
            error = summarize(str(exc) or type(exc).__name__)
            if classify(exc) is ErrorKind.PERMANENT:
                storage_error(activity.metric_meter(), ErrorKind.PERMANENT.value, code)
                raise ApplicationError(
                    f"storage server {name} refused: {error}"
                    if isinstance(exc, psycopg.Error)
                    else f"storage creation on {name} failed: {type(exc).__name__}: {error}",
                    type=FailureType.STORAGE_FORBIDDEN,
                    non_retryable=True,
                ) from None
            await self._transient(request, name, error, code)
        # Retried when transient (the DDL is idempotent); a permanent failure would fail the
        # same way on every retry.
        with metadata_failures("jdbcUrl"):
            await self._tenants.set_jdbc_url(request.tenant_id, location.jdbc_url)
        if request.then_status is not None:
            # The status the run asked for once its storage is recorded, in this attempt
            # rather than in a task of its own.
            await transition(self._tenants, request.tenant_id, request.then_status)
        return location

    async def _transient(
        self, request: CreateStorageInput, server: str, error: str, code: str
    ) -> NoReturn:
        """Count the failure, show it on the tenant (best effort: the metadata database may
        be down as well, which must not change how the attempt fails) and fail retryably."""
        storage_error(activity.metric_meter(), ErrorKind.TRANSIENT.value, code)
        reason = f"storage creation on {server} failed, retrying: {error}"
        try:
            await self._tenants.note_provisioning_problem(request.tenant_id, reason)
        except Exception as exc:
            _log.warning("could not record the storage failure of %s: %s", request.tenant_id, exc)
        raise ApplicationError(reason, type=FailureType.STORAGE_FAILED)


def _leaving(tenant_id: str) -> ApplicationError:
    return ApplicationError(
        f"the deletion of tenant {tenant_id} was asked; its storage is not created",
        type=FailureType.PROVISION_CANCELLED,
        non_retryable=True,
    )
