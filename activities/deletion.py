"""Activities of a tenant's offboarding: stop its provisioning, schedule and restore its deletion,
and the purge's steps (backup, each service's teardown, drop). Each is idempotent: a repeat finds
its work done (the provisioning run closed, the request recorded, the backup recorded, the
service's part gone, the storage gone) and does nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import httpx
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.bookkeeping import metadata_failures
from activities.commands import CommandChannel
from activities.downstream import Outcome, Unreachable, answer_reason, classify_status, signed_call
from activities.storage import heartbeating
from infra.db.backup import BackupFailed, StorageNotFound, take_backup
from infra.db.deletions import DeletionConflict, DeletionRepository, TenantMissing
from infra.db.errors import ErrorKind, classify
from infra.db.fleet import StorageFleet, TenantStorage
from infra.db.repository import TransitionRefused
from infra.db.servers import UnknownServer
from infra.db.storage import StorageStillPresent
from infra.events.commands import CommandType, ReplyOutcome
from infra.security.signing import CallSigner
from tenancy.contracts import (
    BackupInput,
    BackupResult,
    DeletionProgressResult,
    DropStorageInput,
    LoadDeletionInput,
    RestoreInput,
    ScheduleDeletionInput,
    StopProvisioningInput,
    TeardownInput,
    TransitionResult,
)
from tenancy.failures import FailureType, summarize
from tenancy.models import BackupRecord, StorageLocation, StorageMode
from tenancy.naming import provision_workflow_id, workflow_actor
from tenancy.settings import DownstreamService, Settings

HEARTBEAT_INTERVAL = timedelta(seconds=2)
# How often a cancelled provisioning run is asked whether it has closed.
_CLOSE_POLL = timedelta(milliseconds=250)


def _actor() -> str:
    return workflow_actor(activity.info().workflow_id or "unknown")


class TeardownLedger:
    """What each answer of a teardown call means, for the HTTP call, the event-driven call and
    its reply listener alike."""

    def __init__(self, deletions: DeletionRepository) -> None:
        self._deletions = deletions

    async def succeeded(self, tenant_id: str, service: str) -> None:
        """The service's part is gone: remember it, so a retried purge skips the service."""
        with metadata_failures("teardown record"):
            await self._deletions.record_torn_down(tenant_id, service)

    @staticmethod
    def rejected(reason: str) -> ApplicationError:
        """The service refused: final."""
        return ApplicationError(reason, type=FailureType.TEARDOWN_REJECTED, non_retryable=True)

    @staticmethod
    def failed(reason: str) -> ApplicationError:
        """Worth another attempt (Temporal counts them: `teardown_options`)."""
        return ApplicationError(reason, type=FailureType.TEARDOWN_UNAVAILABLE)


class DeletionActivities:
    """Bound to the deletion repository, the storage fleet, the HTTP client and signer of
    downstream calls, the command channel (services with transport events), and the worker's
    settings (backup folder and timeout)."""

    def __init__(
        self,
        deletions: DeletionRepository,
        fleet: StorageFleet,
        http: httpx.AsyncClient,
        signer: CallSigner,
        services: Iterable[DownstreamService],
        settings: Settings,
        commands: CommandChannel | None = None,
    ) -> None:
        self._deletions = deletions
        self._commands = commands
        self.teardowns = TeardownLedger(deletions)
        self._fleet = fleet
        self._http = http
        self._signer = signer
        self._services = {service.name: service for service in services}
        self._settings = settings

    @activity.defn(name="stop_provisioning")
    async def stop_provisioning(self, request: StopProvisioningInput) -> None:
        """Cancel the tenant's provisioning run if one is open, and return once it has closed:
        the run records where it stopped (PROVISION_ERROR or MIGRATION_ERROR) before it ends,
        so nothing of it moves the tenant after the deletion is scheduled."""
        handle = activity.client().get_workflow_handle(provision_workflow_id(request.tenant_id))
        cancelled = False
        async with heartbeating(HEARTBEAT_INTERVAL):
            while True:
                try:
                    description = await handle.describe()
                except RPCError as exc:
                    if exc.status is RPCStatusCode.NOT_FOUND:
                        return
                    raise
                if description.status is not WorkflowExecutionStatus.RUNNING:
                    return
                if not cancelled:
                    await handle.cancel()
                    cancelled = True
                await asyncio.sleep(_CLOSE_POLL.total_seconds())

    @activity.defn(name="schedule_deletion")
    async def schedule_deletion(self, request: ScheduleDeletionInput) -> None:
        """Record the deletion request and move the tenant to DELETION_SCHEDULED."""
        try:
            with metadata_failures("schedule_deletion"):
                await self._deletions.schedule(
                    request.tenant_id,
                    requested_by=request.requested_by,
                    reason=request.reason,
                    requested_at=request.requested_at,
                    purge_at=request.purge_at,
                )
        except TenantMissing:
            raise ApplicationError(
                f"no tenant {request.tenant_id}",
                type=FailureType.TENANT_NOT_FOUND,
                non_retryable=True,
            ) from None
        except DeletionConflict as conflict:
            raise ApplicationError(
                str(conflict), type=FailureType.DELETION_CONFLICT, non_retryable=True
            ) from None

    @activity.defn(name="restore_tenant")
    async def restore_tenant(self, request: RestoreInput) -> TransitionResult:
        """Take the tenant back to the status it had before its deletion was asked."""
        try:
            with metadata_failures("restore_tenant"):
                status = await self._deletions.restore(
                    request.tenant_id, request.actor, request.reason, request.requested_at
                )
        except (TransitionRefused, TenantMissing) as refused:
            raise ApplicationError(
                str(refused), type=FailureType.ILLEGAL_TRANSITION, non_retryable=True
            ) from None
        return TransitionResult(status=status)

    @activity.defn(name="load_deletion")
    async def load_deletion(self, request: LoadDeletionInput) -> DeletionProgressResult:
        """Where the tenant's deletion stands, for a run that takes it over."""
        try:
            with metadata_failures("load_deletion"):
                progress = await self._deletions.progress(request.tenant_id)
        except TenantMissing:
            raise ApplicationError(
                f"no tenant {request.tenant_id}",
                type=FailureType.TENANT_NOT_FOUND,
                non_retryable=True,
            ) from None
        return DeletionProgressResult(
            status=progress.status,
            storage_mode=progress.storage_mode,
            requested_at=progress.requested_at,
            purge_at=progress.purge_at,
            backup=progress.backup,
            torn_down=sorted(progress.torn_down),
        )

    @activity.defn(name="backup_storage")
    async def backup_storage(self, request: BackupInput) -> BackupResult:
        """Dump the tenant's schema or database into the backup folder and record it (path,
        size, sha256) with a BACKUP_TAKEN event; the backup of this deletion, once recorded,
        is kept (a retry never replaces it with a later dump).

        Each attempt dumps into a file of its own, so attempts that overlap (a zombie cut off
        from Temporal and its retry) never write over each other: the first to record wins,
        and the others remove their own file. The recorded file is the one hashed."""
        with metadata_failures("backup record"):
            recorded = (await self._deletions.progress(request.tenant_id)).backup
        if recorded is not None:
            return BackupResult(backup=recorded)
        directory = self._settings.deletion_backup_dir
        if directory is None:
            return BackupResult(skipped="no backup folder configured")
        storage = await self._storage_of(request.tenant_id, request.mode)
        if storage is None:
            return BackupResult(skipped="the tenant has no storage to back up")
        try:
            async with heartbeating(HEARTBEAT_INTERVAL):
                taken = await take_backup(
                    self._fleet.server(storage.server).dsn,
                    storage.location,
                    Path(directory),
                    label=request.label,
                    timeout=self._settings.deletion_backup_timeout.total_seconds(),
                )
        except StorageNotFound:
            return BackupResult(skipped="the tenant has no storage to back up")
        except BackupFailed as exc:
            raise ApplicationError(
                f"backup failed: {summarize(str(exc))}",
                type=FailureType.BACKUP_FAILED if exc.transient else FailureType.BACKUP_REFUSED,
                non_retryable=not exc.transient,
            ) from None
        backup = BackupRecord(path=taken.path, size_bytes=taken.size_bytes, sha256=taken.sha256)
        with metadata_failures("backup record"):
            if await self._deletions.record_backup(request.tenant_id, backup, _actor()):
                return BackupResult(backup=backup)
            # Another attempt recorded first: its backup is the one, this dump is spare.
            recorded = (await self._deletions.progress(request.tenant_id)).backup
        if recorded is not None and recorded.path != backup.path:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.remove, backup.path)
        return BackupResult(backup=recorded or backup)

    @activity.defn(name="teardown_service")
    async def teardown_service(self, request: TeardownInput) -> None:
        """DELETE the service's part of the tenant's storage (or send it a TeardownTenant
        command); 2xx and 404 mean it is gone. 408, 429, 5xx and no answer are retried; any
        other answer is final."""
        service = self._services.get(request.service)
        if service is None:
            raise ApplicationError(
                f"service {request.service!r} is not configured on this worker",
                type=FailureType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        storage = await self._storage_of(request.tenant_id, request.mode)
        if storage is None:
            # Never placed, so never created: no service has anything of the tenant's.
            await self.teardowns.succeeded(request.tenant_id, request.service)
            return
        location = storage.location
        if service.over_events:
            await self._teardown_command(request, location)
            return
        try:
            response = await signed_call(
                self._http,
                self._signer,
                service,
                "DELETE",
                f"/internal/tenants/{request.tenant_id}",
                tenant_id=request.tenant_id,
                location=location,
                idempotency_key=request.idempotency_key,
                timeout=request.timeout.total_seconds(),
            )
        except Unreachable as exc:
            raise self.teardowns.failed(str(exc)) from None
        outcome = classify_status(response.status_code)
        if outcome is Outcome.SUCCESS or response.status_code == 404:
            await self.teardowns.succeeded(request.tenant_id, request.service)
            return
        if outcome is Outcome.REJECTED:
            raise self.teardowns.rejected(answer_reason(response))
        raise self.teardowns.failed(answer_reason(response))

    async def _teardown_command(self, request: TeardownInput, location: StorageLocation) -> None:
        """Send the TeardownTenant command and leave the attempt open for its reply (Temporal
        counts the attempts, a wait that runs out included); a final reply already taken
        settles now."""
        assert self._commands is not None, "a worker with events services has a command channel"
        settled = await self._commands.send(
            CommandType.TEARDOWN,
            service=request.service,
            tenant_id=request.tenant_id,
            location=location,
            idempotency_key=request.idempotency_key,
            max_attempts=None,
            task_token=activity.info().task_token,
        )
        if settled is None:
            activity.raise_complete_async()
        if settled.outcome == ReplyOutcome.SUCCEEDED:
            await self.teardowns.succeeded(request.tenant_id, request.service)
            return
        raise self.teardowns.rejected(settled.reason or "rejected")

    @activity.defn(name="drop_storage")
    async def drop_storage(self, request: DropStorageInput) -> None:
        """Drop the tenant's schema or database and check that it is gone."""
        storage = await self._storage_of(request.tenant_id, request.mode)
        if storage is None:
            return
        try:
            async with heartbeating(HEARTBEAT_INTERVAL):
                await storage.admin.drop(storage.location)
        except StorageStillPresent as exc:
            raise ApplicationError(str(exc), type=FailureType.DROP_FAILED) from None
        except Exception as exc:
            self._drop_failed(exc)

    async def _storage_of(self, tenant_id: str, mode: StorageMode) -> TenantStorage | None:
        """The tenant's storage on the server its row names (None: never placed)."""
        try:
            with metadata_failures("storage server"):
                return await self._fleet.of_tenant(tenant_id, mode)
        except UnknownServer as exc:
            # Retried: the worker's list lacks the server (refused at start; an older worker).
            raise ApplicationError(str(exc), type=FailureType.DROP_FAILED) from None

    @staticmethod
    def _drop_failed(exc: Exception) -> NoReturn:
        reason = f"drop failed: {summarize(str(exc) or type(exc).__name__)}"
        if classify(exc) is ErrorKind.TRANSIENT:
            raise ApplicationError(reason, type=FailureType.DROP_FAILED) from None
        raise ApplicationError(reason, type=FailureType.DROP_REFUSED, non_retryable=True) from None
