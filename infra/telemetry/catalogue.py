"""Every metric the platform exports, as a scrape shows it: the handbook's metrics page is
generated from this list, and the alert rules' test refuses a rule that names a metric or a label
not in it. A test scrapes a real worker and a real API and holds the list to what they serve.

Names are as served: the worker's (recorded through the Temporal SDK's meters) carry no suffix
but what the code names them; the API's counter is served with prometheus_client's `_total`.
A histogram is served as `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.db.server_checks import SERVER_CAPACITY, SERVER_TENANTS, SERVER_UP
from infra.telemetry import metrics as m

Kind = Literal["counter", "gauge", "histogram"]
Process = Literal["worker", "api"]


@dataclass(frozen=True)
class MetricDoc:
    """One exported metric: its served name, kind, labels, unit and meaning."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    process: Process
    unit: str = ""

    def series_names(self) -> tuple[str, ...]:
        """The names a scrape shows for it (a histogram's three series)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


METRICS: tuple[MetricDoc, ...] = (
    MetricDoc(
        m.PROVISIONS_STARTED,
        "counter",
        ("storage_mode", "sla_tier"),
        "Provisionings started.",
        "worker",
    ),
    MetricDoc(
        m.PROVISIONS_FINISHED,
        "counter",
        ("result", "storage_mode", "sla_tier"),
        "Provisioning passes by how they ended: ACTIVE, PROVISION_ERROR, MIGRATION_ERROR "
        "(counted each time a tenant lands there) or REJECTED (the id belonged to another run).",
        "worker",
    ),
    MetricDoc(
        m.PROVISION_DURATION,
        "histogram",
        ("storage_mode", "sla_tier"),
        "From the workflow's start to ACTIVE.",
        "worker",
        "ms",
    ),
    MetricDoc(
        m.MIGRATION_ATTEMPTS,
        "counter",
        ("service", "outcome"),
        "Calls to a downstream service's migrate endpoint by outcome: success, retryable or "
        "rejected.",
        "worker",
    ),
    MetricDoc(
        m.STORAGE_ERRORS,
        "counter",
        ("kind", "sqlstate"),
        "Failed storage creation attempts: kind transient or permanent, the SQLSTATE (or none, "
        "throttled).",
        "worker",
    ),
    MetricDoc(
        m.DELETIONS_FINISHED,
        "counter",
        ("result", "storage_mode"),
        "Deletion passes by how they ended: DELETED, DELETION_ERROR or RESTORED.",
        "worker",
    ),
    MetricDoc(
        m.DELETION_DURATION,
        "histogram",
        ("storage_mode",),
        "From the deletion request to DELETED, the grace period included.",
        "worker",
        "ms",
    ),
    MetricDoc(
        m.ROLLOUT_TENANTS,
        "counter",
        ("result",),
        "Tenants of fleet rollouts by result: SUCCEEDED, FAILED or SKIPPED.",
        "worker",
    ),
    MetricDoc(
        m.ROLLOUT_DURATION,
        "histogram",
        ("result",),
        "From a rollout's start to its end, by how it ended.",
        "worker",
        "ms",
    ),
    MetricDoc(
        m.TENANTS,
        "gauge",
        ("status",),
        "Tenants in each status, zero included (refreshed every "
        f"{m.TENANT_GAUGE_INTERVAL.total_seconds():g} s).",
        "worker",
    ),
    MetricDoc(
        m.TENANTS_OLDEST,
        "gauge",
        ("status",),
        "How long the longest-waiting tenant in each status has been in it, 0 when none is "
        "(refreshed with platform_tenants).",
        "worker",
        "s",
    ),
    MetricDoc(
        m.ROLLOUTS,
        "gauge",
        ("status",),
        "Fleet rollouts in each status, zero included (refreshed with platform_tenants).",
        "worker",
    ),
    MetricDoc(
        m.RELAY_LEADER,
        "gauge",
        (),
        "1 while this worker's event relay holds the outbox lock (publishes), 0 while it "
        "stands by; not served when PLATFORM_EVENTS_BACKEND is none.",
        "worker",
    ),
    MetricDoc(
        m.OUTBOX_BACKLOG,
        "gauge",
        (),
        "Lifecycle events committed but not yet published.",
        "worker",
    ),
    MetricDoc(
        m.OUTBOX_OLDEST,
        "gauge",
        (),
        "Age of the oldest unpublished lifecycle event, 0 when there is none.",
        "worker",
        "s",
    ),
    MetricDoc(
        m.EVENTS_PUBLISHED,
        "counter",
        ("family",),
        "Lifecycle events the bus acknowledged, by family: tenants or rollouts.",
        "worker",
    ),
    MetricDoc(
        m.COMMAND_REPLIES,
        "counter",
        ("service", "result"),
        "Replies of services with transport events: taken, ignored, refused, unverified or "
        "dead_lettered.",
        "worker",
    ),
    MetricDoc(
        SERVER_UP,
        "gauge",
        ("server",),
        "1 when the storage server answered its last check, 0 when it did not.",
        "worker",
    ),
    MetricDoc(
        SERVER_TENANTS,
        "gauge",
        ("server", "pool"),
        "Tenants on the storage server, in every status but DELETED.",
        "worker",
    ),
    MetricDoc(
        SERVER_CAPACITY,
        "gauge",
        ("server", "pool"),
        "The storage server's capacity: its maxTenants.",
        "worker",
    ),
    MetricDoc(
        "platform_api_requests_total",
        "counter",
        ("method", "route", "status"),
        "HTTP requests by method, route template and status code.",
        "api",
    ),
    MetricDoc(
        "platform_api_request_duration_seconds",
        "histogram",
        ("method", "route"),
        "HTTP request latency by method and route template.",
        "api",
        "s",
    ),
)


def by_name() -> dict[str, MetricDoc]:
    """The catalogue keyed by every series name a scrape shows."""
    return {series: doc for doc in METRICS for series in doc.series_names()}
