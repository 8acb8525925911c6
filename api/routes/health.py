"""Health endpoints: open, for probes."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from fastapi import APIRouter
from psycopg_pool import PoolTimeout
from pydantic import Field
from temporalio.service import RPCError

from api.deps import CommandBusProbe, TemporalClient, Tenants
from api.errors import ServiceUnavailable
from infra.events.bus import BusUnavailable
from tenancy.models import CamelModel

health_router = APIRouter(tags=["health"])

_HEALTH_TIMEOUT = timedelta(seconds=2)


class EventsLag(CamelModel):
    """Lifecycle events written but not yet published: how many, and the oldest's age.

    `backlog` is exact while `backlog_exact`; a large backlog is estimated (never low) rather
    than counted, so reading it costs the same whatever its size (see `infra.db.outbox`)."""

    backlog: int
    backlog_exact: bool
    oldest_seconds: float


class Health(CamelModel):
    """Health answer."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
    events: EventsLag | None = None


@health_router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@health_router.get("/readyz", response_model=Health, responses={503: {"description": "Not ready"}})
async def readyz(
    tenants: Tenants, temporal: TemporalClient, command_bus: CommandBusProbe
) -> Health:
    """Readiness: PostgreSQL and Temporal both answer, and so does the command bus (NATS
    JetStream, check `commandBus`) when a service takes its calls over it (transport events).

    `events` shows the outbox's lag for information only: a bus that is away delays events
    but loses none, and the API works without it, so a backlog never makes the API unready.
    """
    checks: dict[str, str] = {}
    events: EventsLag | None = None
    try:
        await tenants.ping()
        checks["postgresql"] = "ok"
        backlog = await tenants.event_backlog()
        events = EventsLag(
            backlog=backlog.count,
            backlog_exact=backlog.exact,
            oldest_seconds=backlog.oldest.total_seconds(),
        )
    except (psycopg.Error, PoolTimeout) as exc:
        checks["postgresql"] = f"unavailable: {type(exc).__name__}"
    try:
        await temporal.service_client.check_health(timeout=_HEALTH_TIMEOUT)
        checks["temporal"] = "ok"
    except (RPCError, RuntimeError) as exc:
        checks["temporal"] = f"unavailable: {type(exc).__name__}"
    if command_bus is not None:
        try:
            await command_bus.check()
            checks["commandBus"] = "ok"
        except BusUnavailable:
            checks["commandBus"] = "unavailable: NATS JetStream does not answer"
    if any(value != "ok" for value in checks.values()):
        raise ServiceUnavailable("not ready", checks=checks)
    return Health(status="ok", checks=checks, events=events)
