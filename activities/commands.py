"""Sending a command to a service with transport events, for an activity attempt that completes
when the reply comes (migrate, teardown) or a rollout batch that waits for it in place.

Each send is numbered and recorded before it goes on the bus, with the task token of the
attempt that waits, so the reply listener (`activities.replies`) finds what to complete, in any
worker of the deployment. A send the bus does not take fails the attempt as the platform's own
failure (retried, never counted against the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures
from infra.db.commands import CommandRepository, CommandRow
from infra.events.bus import BusUnavailable
from infra.events.command_bus import CommandBus
from infra.events.commands import Command, CommandType, command_id
from infra.security.signing import CallSigner
from tenancy.failures import FailureType, summarize
from tenancy.models import StorageLocation

# How often a rollout batch reads whether its command has its reply, when no reply taken by
# this process's listener wakes it first (another worker's listener took it).
REPLY_POLL = timedelta(seconds=1)


class NoReply(Exception):
    """A rollout's command got no reply within its timeout."""


class CommandChannel:
    """The bus and the command records, with the signer of each command's token."""

    def __init__(self, bus: CommandBus, commands: CommandRepository, signer: CallSigner) -> None:
        self._bus = bus
        self._commands = commands
        self._signer = signer
        # The in-place waits of this process, by command id (see `replied`).
        self._waiting: dict[str, asyncio.Event] = {}

    def replied(self, command_id: str) -> None:
        """This process's listener took a reply to `command_id`: wake the batch waiting for it
        rather than let it find the reply at its next read."""
        event = self._waiting.get(command_id)
        if event is not None:
            event.set()

    async def prior(self, kind: CommandType, idempotency_key: str) -> CommandRow | None:
        """The logical call's command as sent so far (None: never sent)."""
        with metadata_failures("command record"):
            return await self._commands.get(command_id(kind, idempotency_key))

    async def send(
        self,
        kind: CommandType,
        *,
        service: str,
        tenant_id: str,
        location: StorageLocation,
        idempotency_key: str,
        max_attempts: int | None,
        task_token: bytes | None,
    ) -> CommandRow | None:
        """Send the call's command once more; None once the bus has it, or the command's row
        when a final reply is already there (nothing is sent then)."""
        call = _Call(kind, service, tenant_id, location, idempotency_key)
        try:
            with metadata_failures("command record"):
                attempt = await self._dispatch(call, max_attempts, task_token)
                if attempt is None:
                    return await self._commands.get(call.identifier)
        except BusUnavailable as exc:
            raise ApplicationError(
                summarize(f"cannot send {kind.value} to {service}: {exc}"),
                type=FailureType.BUS_UNAVAILABLE,
            ) from None
        return None

    async def call(
        self,
        kind: CommandType,
        *,
        service: str,
        tenant_id: str,
        location: StorageLocation,
        idempotency_key: str,
        timeout: timedelta,
    ) -> CommandRow:
        """Send once and wait here (a rollout batch) for the reply to this send or a final one;
        NoReply when `timeout` passes first. BusUnavailable when the bus does not take it."""
        call = _Call(kind, service, tenant_id, location, idempotency_key)
        # Registered before the send, so a reply taken at once still wakes this wait.
        woken = self._waiting[call.identifier] = asyncio.Event()
        try:
            attempt = await self._dispatch(call, None, None)
            deadline = time.monotonic() + timeout.total_seconds()
            while True:
                woken.clear()
                row = await self._commands.get(call.identifier)
                if row is not None and (attempt is None or row.answered(attempt)):
                    return row
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoReply(f"no reply from {service} within {timeout.total_seconds():g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, REPLY_POLL.total_seconds()))
        finally:
            if self._waiting.get(call.identifier) is woken:
                del self._waiting[call.identifier]

    async def _dispatch(
        self, call: _Call, max_attempts: int | None, task_token: bytes | None
    ) -> int | None:
        """Number the next send, put it on the bus and record that its wait has started; its
        number, or None when a final reply is already there (nothing sent)."""
        attempt = await self._commands.next_send(
            command_id=call.identifier,
            kind=call.kind,
            tenant_id=call.tenant_id,
            service=call.service,
            idempotency_key=call.idempotency_key,
            max_attempts=max_attempts,
            task_token=task_token,
        )
        if attempt is None:
            return None
        command = Command(
            type=call.kind,
            command_id=call.identifier,
            attempt=attempt,
            service=call.service,
            tenant_id=call.tenant_id,
            location=call.location,
            idempotency_key=call.idempotency_key,
            # A new token per send: its `jti` is single-use at the service, as for HTTP.
            token=self._signer.token(audience=call.service, tenant_id=call.tenant_id),
        )
        await self._bus.send(command)
        await self._commands.mark_sent(call.identifier, attempt)
        return attempt


@dataclass(frozen=True)
class _Call:
    """One logical call to a service with transport events."""

    kind: CommandType
    service: str
    tenant_id: str
    location: StorageLocation
    idempotency_key: str

    @property
    def identifier(self) -> str:
        """Its command id: the same for every send."""
        return command_id(self.kind, self.idempotency_key)
