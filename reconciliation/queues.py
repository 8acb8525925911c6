"""Calls that wait on a task queue no worker polls (drift `UNPOLLED_QUEUE`).

A run schedules each call on a task queue, and Temporal hands it to a worker polling that
queue. A deploy can leave a queue without one: a service removed from the workers' settings,
or a run of new code calling on a per-service queue that old workers do not poll. A migration
call scheduled since `PLATFORM_MIGRATION_SCHEDULE_TO_START` fails after that bound; every
other call (runs started before it, activities on a workflow's own queue) waits for ever, and
its tenant stays where it is with an open run that is not stuck, only starved.

Report only. The repair is a deploy: a worker that polls the queue takes the call at once.
For a service removed on purpose, cancel the run instead (the tenant goes to MIGRATION_ERROR)
and retry-migration starts a run with the services configured today.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from infra.temporal import last_activity_poll
from tenancy.naming import migration_task_queue
from tenancy.status import TenantStatus

# Tenants whose run is calling activities now (the waiting statuses call nothing).
CALLING_STATUSES = frozenset(
    {TenantStatus.PROVISIONING, TenantStatus.MIGRATING, TenantStatus.DELETING}
)
# Temporal records a poll when it arrives, and keeps listing the poller for minutes after.
# A live worker's poll is at most a long poll old (about a minute), or, when every slot is
# busy, that plus the time until a slot frees (a migrate call's start-to-close, 70 s by
# default); silent for longer than this, a listed poller is taken for gone.
POLLER_GONE_AFTER = timedelta(minutes=3)


def is_polled(last_poll: datetime | None, now: datetime) -> bool:
    """Whether a worker polled the queue recently enough to be taken for alive."""
    return last_poll is not None and now - last_poll < POLLER_GONE_AFTER


@dataclass(frozen=True)
class UnpolledCall:
    """One call of a tenant's open run that waits on a queue nobody polls."""

    tenant_id: str
    task_queue: str
    activity: str
    # Known for migration calls on a service's own queue.
    service: str | None
    waiting_since: datetime | None
    last_poll: datetime | None

    def describe(self) -> str:
        """The report line's detail."""
        what = f"service {self.service}" if self.service else f"activity {self.activity}"
        since = self.waiting_since.isoformat(timespec="seconds") if self.waiting_since else "?"
        last = self.last_poll.isoformat(timespec="seconds") if self.last_poll else "never"
        return (
            f"no worker polls queue {self.task_queue} for {what} "
            f"(call waiting since {since}, last poll {last}; report only)"
        )


class QueueWatch:
    """Finds the unpolled calls of open runs, asking about each task queue once."""

    def __init__(self, client: Client, now: datetime) -> None:
        self._client = client
        self._now = now
        self._polls: dict[str, asyncio.Task[datetime | None]] = {}

    def _last_poll(self, task_queue: str) -> asyncio.Task[datetime | None]:
        if task_queue not in self._polls:
            self._polls[task_queue] = asyncio.ensure_future(
                last_activity_poll(self._client, task_queue)
            )
        return self._polls[task_queue]

    async def calls(self, tenant_id: str, workflow_id: str) -> list[UnpolledCall]:
        """The calls of the workflow's open run that no live worker can take."""
        try:
            description = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return []
            raise
        if description.status is not WorkflowExecutionStatus.RUNNING:
            return []
        raw = description.raw_description
        own_queue = raw.execution_config.task_queue.name
        service_prefix = migration_task_queue(own_queue, "")
        found = []
        for pending in raw.pending_activities:
            if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
                continue
            queue = pending.activity_options.task_queue.name or own_queue
            last = await self._last_poll(queue)
            if is_polled(last, self._now):
                continue
            found.append(
                UnpolledCall(
                    tenant_id=tenant_id,
                    task_queue=queue,
                    activity=pending.activity_type.name,
                    service=queue.removeprefix(service_prefix)
                    if queue.startswith(service_prefix)
                    else None,
                    waiting_since=pending.scheduled_time.ToDatetime(tzinfo=UTC)
                    if pending.HasField("scheduled_time")
                    else None,
                    last_poll=last,
                )
            )
        return found
