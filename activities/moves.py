"""Activities of a tenant's move between storage servers (`MoveTenantWorkflow`): each step on
the storage (prepare the target, freeze the source, copy, verify, undo, drop the kept source)
and on the tenant's row (phase, reason, switch, roll back). Each is idempotent: storage is
created if missing, a freeze or unfreeze repeated changes nothing, a copy empties its target
first, the switch and the rollback are no-ops once done, a drop of what is gone does nothing.

A database error that a retry may fix (a server away) fails the attempt, retryably, naming the
server; anything else fails the step for good, and the workflow rolls the move back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures
from activities.storage import heartbeating
from infra.db import moves as storage_moves
from infra.db.errors import ErrorKind, classify
from infra.db.fleet import StorageFleet
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.db.servers import UnknownServer
from infra.db.storage import StorageStillPresent
from infra.db.tenant_moves import MoveRepository
from tenancy.failures import FailureType, summarize
from tenancy.models import RetainedSource, StorageLocation
from tenancy.moves import (
    CopyResult,
    LoadMoveInput,
    MovePhaseInput,
    MoveReasonInput,
    MoveRecord,
    MoveStepInput,
    RollBackInput,
    SwitchInput,
)
from tenancy.settings import Settings

_log = logging.getLogger(__name__)
HEARTBEAT_INTERVAL = timedelta(seconds=2)
# How often a freeze looks whether a rollout's calls on the tenant are done.
ROLLOUT_POLL = timedelta(milliseconds=500)
_STORAGE_ERRORS = (psycopg.Error, OSError, TimeoutError)


@contextmanager
def storage_failures(step: str, server: str) -> Iterator[None]:
    """A storage server's error as the failure the retry policy reads: away (transient) is
    retried, anything else ends the step for good."""
    try:
        yield
    except storage_moves.MoveStorageError as exc:
        reason = summarize(f"{step} on {server} failed: {exc}")
        if exc.transient:
            raise ApplicationError(reason, type=FailureType.STORAGE_FAILED) from None
        raise ApplicationError(reason, type=FailureType.MOVE_FAILED, non_retryable=True) from None
    except _STORAGE_ERRORS as exc:
        reason = summarize(f"{step} on {server} failed: {exc or type(exc).__name__}")
        if classify(exc) is ErrorKind.TRANSIENT:
            raise ApplicationError(reason, type=FailureType.STORAGE_FAILED) from None
        raise ApplicationError(reason, type=FailureType.MOVE_FAILED, non_retryable=True) from None


class MoveActivities:
    """Bound to the move and tenant repositories, the storage fleet and the settings (the
    services' roles, the copy's timeout, the source's retention)."""

    def __init__(
        self,
        moves: MoveRepository,
        tenants: TenantRepository,
        rollouts: RolloutRepository,
        fleet: StorageFleet,
        settings: Settings,
    ) -> None:
        self._moves = moves
        self._tenants = tenants
        self._rollouts = rollouts
        self._fleet = fleet
        self._roles: Sequence[str] = settings.service_db_roles()
        self._copy_timeout = settings.move_copy_timeout
        self._retention = settings.move_source_retention

    def _location(self, server: str, request: MoveStepInput) -> StorageLocation:
        return self._fleet.locate(server, request.tenant_id, request.mode)

    def _url(self, server: str) -> str:
        return self._fleet.server(server).dsn

    @activity.defn(name="load_move")
    async def load_move(self, request: LoadMoveInput) -> MoveRecord:
        """The move on the tenant's row, and the source's retention."""
        with metadata_failures("load_move"):
            tenant = await self._tenants.get(request.tenant_id)
        if tenant is None:
            raise ApplicationError(
                f"no tenant {request.tenant_id}",
                type=FailureType.TENANT_NOT_FOUND,
                non_retryable=True,
            )
        move = tenant.move
        return MoveRecord(
            tenant_id=tenant.id,
            status=tenant.status,
            storage_mode=tenant.storage_mode,
            storage_server=tenant.storage_server,
            from_server=move.from_server if move else None,
            to_server=move.to_server if move else None,
            phase=move.phase if move else None,
            requested_at=move.requested_at if move else None,
            status_reason=tenant.status_reason,
            retention_seconds=self._retention.total_seconds(),
        )

    @activity.defn(name="set_move_phase")
    async def set_move_phase(self, request: MovePhaseInput) -> None:
        """Record the move's phase on the row (the tenant's `move.phase`)."""
        with metadata_failures("set_move_phase"):
            await self._moves.set_phase(request.tenant_id, request.phase)

    @activity.defn(name="set_move_reason")
    async def set_move_reason(self, request: MoveReasonInput) -> None:
        """Record why the move waits (the tenant's statusReason), or clear it."""
        with metadata_failures("set_move_reason"):
            await self._moves.set_status_reason(request.tenant_id, request.reason)

    @activity.defn(name="prepare_move_target")
    async def prepare_move_target(self, request: MoveStepInput) -> None:
        """PREPARING: the tenant's empty storage on the target, granted as at provisioning. A
        source kept there by an earlier move of the tenant away from it becomes this storage
        (the copy empties it first), so it is no longer dropped when its retention ends."""
        with metadata_failures("prepare_move_target"):
            await self._moves.release_retained(request.tenant_id, request.to_server)
        with storage_failures("preparing the target", request.to_server):
            async with heartbeating(HEARTBEAT_INTERVAL):
                await self._fleet.admin(request.to_server).ensure(request.tenant_id, request.mode)

    @activity.defn(name="freeze_move_source")
    async def freeze_move_source(self, request: MoveStepInput) -> None:
        """FROZEN: the services' roles can no longer use the tenant's storage on the source,
        and their sessions that hold it are ended. First, a rollout's calls in flight on the
        tenant are waited for (a rollout takes no MOVING tenant's calls, but may have started
        them before the move began): a migration is never cut off by the freeze."""
        async with heartbeating(HEARTBEAT_INTERVAL):
            while True:
                with metadata_failures("rollout calls in flight"):
                    if not await self._rollouts.calls_in_flight(request.tenant_id):
                        break
                await asyncio.sleep(ROLLOUT_POLL.total_seconds())
        with storage_failures("freezing the source", request.from_server):
            async with heartbeating(HEARTBEAT_INTERVAL):
                await storage_moves.freeze(
                    self._url(request.from_server),
                    self._location(request.from_server, request),
                    self._roles,
                )

    @activity.defn(name="copy_move")
    async def copy_move(self, request: MoveStepInput) -> CopyResult:
        """COPYING: the frozen source's content into the target's storage."""
        started = time.monotonic()
        with storage_failures("copying", f"{request.from_server} -> {request.to_server}"):
            async with heartbeating(HEARTBEAT_INTERVAL):
                report = await storage_moves.copy_storage(
                    self._url(request.from_server),
                    self._url(request.to_server),
                    self._location(request.from_server, request),
                    timeout=self._copy_timeout.total_seconds(),
                    target=self._location(request.to_server, request),
                )
        return CopyResult(
            bytes=report.bytes_dumped,
            tables=report.tables,
            seconds=round(time.monotonic() - started, 3),
        )

    @activity.defn(name="verify_move")
    async def verify_move(self, request: MoveStepInput) -> None:
        """VERIFYING: every table's rows and content equal on both sides, or the move fails
        for good (its copy is never switched to)."""
        with storage_failures("verifying", f"{request.from_server} -> {request.to_server}"):
            async with heartbeating(HEARTBEAT_INTERVAL):
                mismatches = await storage_moves.verify(
                    self._url(request.from_server),
                    self._url(request.to_server),
                    self._location(request.from_server, request),
                    self._location(request.to_server, request),
                )
        if mismatches:
            shown = "; ".join(m.reason for m in mismatches[:5])
            raise ApplicationError(
                summarize(f"the copy differs from its source: {shown}"),
                type=FailureType.MOVE_VERIFY_FAILED,
                non_retryable=True,
            )

    @activity.defn(name="switch_move")
    async def switch_move(self, request: SwitchInput) -> None:
        """SWITCHED, in one transaction: the tenant ACTIVE on the target (server, jdbcUrl,
        epoch), its events, and the source recorded as kept until `drop_after`."""
        source = self._location(request.from_server, _step(request))
        target = self._location(request.to_server, _step(request))
        with metadata_failures("switch_move"):
            await self._moves.switch(
                request.tenant_id,
                request.to_server,
                target.jdbc_url,
                RetainedSource(
                    tenant_id=request.tenant_id,
                    server=request.from_server,
                    mode=request.mode,
                    database=source.database,
                    schema_name=source.schema_name,
                    drop_after=request.drop_after,
                ),
            )

    @activity.defn(name="undo_move_storage")
    async def undo_move_storage(self, request: MoveStepInput) -> None:
        """Before the switch, undo a move's storage: the source unfrozen first (the services
        may use it again), then the partial target dropped."""
        with storage_failures("unfreezing the source", request.from_server):
            async with heartbeating(HEARTBEAT_INTERVAL):
                await storage_moves.unfreeze(
                    self._url(request.from_server),
                    self._location(request.from_server, request),
                    self._roles,
                )
        with storage_failures("dropping the partial target", request.to_server):
            async with heartbeating(HEARTBEAT_INTERVAL):
                await self._fleet.admin(request.to_server).drop(
                    self._location(request.to_server, request)
                )

    @activity.defn(name="roll_back_move")
    async def roll_back_move(self, request: RollBackInput) -> None:
        """The tenant ACTIVE on its source again, with MOVE_FAILED (or MOVE_CANCELLED)."""
        with metadata_failures("roll_back_move"):
            await self._moves.roll_back(
                request.tenant_id, request.reason, cancelled=request.cancelled
            )

    async def drop_due_sources(self) -> None:
        """Drop every kept source whose retention is over, unless the tenant lives on that
        server again (moved back meanwhile: the storage is its own again), and record it
        dropped. A source whose server is away stays kept until a later round, and holds
        back no other. The worker runs this every `SOURCE_DROP_INTERVAL`."""
        for source in await self._moves.retained_due(datetime.now(UTC)):
            assert source.id is not None  # read from its row
            tenant = await self._tenants.get(source.tenant_id)
            if tenant is not None and source.server in (
                tenant.storage_server,
                tenant.move.to_server if tenant.move else None,
            ):
                # Moved back (or moving back) there: the storage is the tenant's own again.
                await self._moves.mark_dropped(source.id)
                continue
            try:
                # A DRAINED server may leave the settings with its sources still kept.
                location = self._fleet.locate(source.server, source.tenant_id, source.mode)
                await self._fleet.admin(source.server).drop(location)
            except (*_STORAGE_ERRORS, StorageStillPresent, UnknownServer) as exc:
                _log.warning(
                    "could not drop the source %s kept on %s (tried again later): %s",
                    source.tenant_id,
                    source.server,
                    exc or type(exc).__name__,
                )
                continue
            await self._moves.mark_dropped(source.id)
            _log.info("dropped the source %s kept on %s", source.tenant_id, source.server)


def _step(request: SwitchInput) -> MoveStepInput:
    return MoveStepInput(
        tenant_id=request.tenant_id,
        mode=request.mode,
        from_server=request.from_server,
        to_server=request.to_server,
    )
