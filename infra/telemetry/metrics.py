"""The worker's domain metrics, recorded through the Temporal SDK's meters.

They are exported by the same runtime as the SDK's own `temporal_*` metrics, on the worker's
Prometheus endpoint (`PLATFORM_WORKER_METRICS_ADDRESS`). In a workflow the meter comes from
`workflow.metric_meter()`, which records nothing while history is replayed, so a metric is
counted once per real event and adds nothing to the history.

Each metric's kind, labels and meaning are in `infra.telemetry.catalogue`, which the
handbook's metrics page is generated from and a test holds to what the worker serves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from temporalio.common import MetricMeter

from infra.background import in_background, repeat
from tenancy.models import TenantSpec
from tenancy.rollouts import RolloutStatus
from tenancy.status import TenantStatus

PROVISIONS_STARTED = "platform_provisions_started"
PROVISIONS_FINISHED = "platform_provisions_finished"
PROVISION_DURATION = "platform_provision_duration"
MIGRATION_ATTEMPTS = "platform_migration_attempts"
STORAGE_ERRORS = "platform_storage_errors"
TENANTS = "platform_tenants"
TENANTS_OLDEST = "platform_tenants_oldest_seconds"
ROLLOUTS = "platform_rollouts"
RELAY_LEADER = "platform_outbox_relay_leader"
DELETIONS_FINISHED = "platform_deletions_finished"
DELETION_DURATION = "platform_deletion_duration"
ROLLOUT_TENANTS = "platform_rollout_tenants"
ROLLOUT_DURATION = "platform_rollout_duration"
OUTBOX_BACKLOG = "platform_outbox_backlog"
OUTBOX_OLDEST = "platform_outbox_oldest_seconds"
EVENTS_PUBLISHED = "platform_events_published_total"
COMMAND_REPLIES = "platform_command_replies_total"

TENANT_GAUGE_INTERVAL = timedelta(seconds=15)
# A provisioning takes seconds, or hours when it waits in MIGRATION_ERROR for an operator.
HISTOGRAM_BUCKETS: Mapping[str, list[float]] = {
    PROVISION_DURATION: [
        250,
        500,
        1_000,
        2_500,
        5_000,
        10_000,
        30_000,
        60_000,
        300_000,
        900_000,
        3_600_000,
        14_400_000,
    ],
    # From an immediate purge (seconds) to the default 7-day grace period and beyond.
    DELETION_DURATION: [
        1_000,
        5_000,
        30_000,
        300_000,
        3_600_000,
        86_400_000,
        604_800_000,
        691_200_000,
        2_592_000_000,
    ],
}

_log = logging.getLogger(__name__)


class ProvisionResult(StrEnum):
    """How a provisioning pass ended. MIGRATION_ERROR is counted each time a tenant lands
    there (a `retry_migration` signal starts another pass); REJECTED means the tenant id
    belonged to another workflow run."""

    ACTIVE = "ACTIVE"
    PROVISION_ERROR = "PROVISION_ERROR"
    MIGRATION_ERROR = "MIGRATION_ERROR"
    REJECTED = "REJECTED"


def _tenant_attributes(spec: TenantSpec) -> dict[str, str]:
    return {"storage_mode": spec.storage_mode.value, "sla_tier": spec.sla_tier.value}


def provision_started(meter: MetricMeter, spec: TenantSpec) -> None:
    """Count a new provisioning."""
    meter.create_counter(PROVISIONS_STARTED, "Provisionings started").add(
        1, _tenant_attributes(spec)
    )


def provision_finished(
    meter: MetricMeter,
    spec: TenantSpec,
    result: ProvisionResult,
    duration: timedelta | None = None,
) -> None:
    """Count a provisioning outcome; `duration` (start to ACTIVE) feeds the histogram."""
    attributes = _tenant_attributes(spec)
    meter.create_counter(PROVISIONS_FINISHED, "Provisioning outcomes by result").add(
        1, {**attributes, "result": result.value}
    )
    if duration is not None:
        meter.create_histogram_timedelta(
            PROVISION_DURATION, "From workflow start to ACTIVE", "ms"
        ).record(duration, attributes)


class DeletionResult(StrEnum):
    """How a deletion pass ended. DELETION_ERROR is counted each time a purge fails (a
    retry-deletion starts another pass); RESTORED when the grace period ended in a restore."""

    DELETED = "DELETED"
    DELETION_ERROR = "DELETION_ERROR"
    RESTORED = "RESTORED"


def deletion_finished(
    meter: MetricMeter,
    storage_mode: str,
    result: DeletionResult,
    duration: timedelta | None = None,
) -> None:
    """Count a deletion outcome; `duration` (request to DELETED) feeds the histogram."""
    attributes = {"storage_mode": storage_mode}
    meter.create_counter(DELETIONS_FINISHED, "Deletion outcomes by result").add(
        1, {**attributes, "result": result.value}
    )
    if duration is not None:
        meter.create_histogram_timedelta(
            DELETION_DURATION, "From the deletion request to DELETED", "ms"
        ).record(duration, attributes)


def rollout_tenant_finished(meter: MetricMeter, result: str) -> None:
    """Count one tenant's result in a fleet rollout."""
    meter.create_counter(ROLLOUT_TENANTS, "Rollout tenants by result").add(1, {"result": result})


def rollout_finished(meter: MetricMeter, result: str, duration: timedelta) -> None:
    """Record how long a rollout took, by how it ended."""
    meter.create_histogram_timedelta(
        ROLLOUT_DURATION, "From the rollout's start to its end", "ms"
    ).record(duration, {"result": result})


def migration_attempt(meter: MetricMeter, service: str, outcome: str) -> None:
    """Count one call to a downstream service's migrate endpoint by its outcome."""
    meter.create_counter(MIGRATION_ATTEMPTS, "Downstream migration calls by outcome").add(
        1, {"service": service, "outcome": outcome}
    )


def storage_error(meter: MetricMeter, kind: str, sqlstate: str) -> None:
    """Count one failed storage creation attempt by what a retry can do about it."""
    meter.create_counter(STORAGE_ERRORS, "Failed storage creation attempts by kind").add(
        1, {"kind": kind, "sqlstate": sqlstate}
    )


def outbox_backlog(meter: MetricMeter, count: int, oldest: timedelta) -> None:
    """Set the outbox gauges: unpublished events and the age of the oldest."""
    meter.create_gauge(OUTBOX_BACKLOG, "Lifecycle events not yet published").set(count)
    meter.create_gauge_float(
        OUTBOX_OLDEST, "Age of the oldest unpublished lifecycle event", "s"
    ).set(oldest.total_seconds())


def outbox_published(meter: MetricMeter, family: str) -> None:
    """Count one lifecycle event the bus acknowledged."""
    meter.create_counter(EVENTS_PUBLISHED, "Lifecycle events published").add(1, {"family": family})


def relay_leader(meter: MetricMeter, holds_lock: bool) -> None:
    """Set the relay's gauge: 1 while it holds the outbox lock, 0 while it stands by."""
    meter.create_gauge(RELAY_LEADER, "1 while this worker's relay holds the outbox lock").set(
        1 if holds_lock else 0
    )


# A status's tenants: how many, and how long the longest-waiting of them has been in it (zero
# when there is none).
StatusCount = tuple[int, timedelta]


def tenant_statuses(meter: MetricMeter, statuses: Mapping[TenantStatus, StatusCount]) -> None:
    """Set `platform_tenants{status}` and `platform_tenants_oldest_seconds{status}`."""
    count = meter.create_gauge(TENANTS, "Tenants by status")
    oldest = meter.create_gauge_float(
        TENANTS_OLDEST, "How long the longest-waiting tenant has been in its status", "s"
    )
    for status, (tenants, waited) in statuses.items():
        count.set(tenants, {"status": status.value})
        oldest.set(waited.total_seconds(), {"status": status.value})


def rollout_statuses(meter: MetricMeter, counts: Mapping[RolloutStatus, int]) -> None:
    """Set `platform_rollouts{status}`."""
    gauge = meter.create_gauge(ROLLOUTS, "Fleet rollouts by status")
    for status, count in counts.items():
        gauge.set(count, {"status": status.value})


class TenantCounter(Protocol):
    """What the tenants gauges read (`TenantRepository` in the worker)."""

    async def status_counts(self) -> dict[TenantStatus, StatusCount]:
        """Every status's tenants and the longest wait in it, zero included."""
        ...


class RolloutCounter(Protocol):
    """What the rollouts gauge reads (`RolloutRepository` in the worker)."""

    async def count_by_status(self) -> dict[RolloutStatus, int]:
        """The number of rollouts in each status, zero included."""
        ...


async def refresh_tenant_gauge(
    counter: TenantCounter, rollouts: RolloutCounter, meter: MetricMeter
) -> None:
    """Set the tenants' and the rollouts' gauges from the metadata database once."""
    tenant_statuses(meter, await counter.status_counts())
    rollout_statuses(meter, await rollouts.count_by_status())


@asynccontextmanager
async def tenant_gauge(
    counter: TenantCounter,
    rollouts: RolloutCounter,
    meter: MetricMeter,
    interval: timedelta = TENANT_GAUGE_INTERVAL,
) -> AsyncIterator[None]:
    """Refresh the tenants' and rollouts' gauges now and every `interval` while the context is
    open."""
    refreshing = repeat(
        lambda: refresh_tenant_gauge(counter, rollouts, meter),
        interval,
        "refresh the tenants gauge",
    )
    async with in_background(refreshing, "tenant-gauge"):
        yield


def command_reply(meter: MetricMeter, service: str, result: str) -> None:
    """Count one reply read from the bus: taken, ignored (nothing waits for it), refused
    (signed, but not a reply to trust), unverified (no key of this worker verifies it: handed
    back) or dead_lettered (no worker's key verified it in time, or forged)."""
    meter.create_counter(COMMAND_REPLIES, "Replies of event-driven calls by result").add(
        1, {"service": service, "result": result}
    )
