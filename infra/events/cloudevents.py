"""The lifecycle events' format: CloudEvents 1.0, JSON structured mode.

Every tenant audit action and rollout milestone has one event type,
`io.platform-service.tenant.<name>.v1` or `io.platform-service.rollout.<name>.v1`, where `<name>`
is the action in kebab case (`STATUS_CHANGED` -> `status-changed`, `ROLLOUT_STARTED` -> `started`),
except the few named by what happened to the tenant (`TENANT_MOVED` -> `moved`, `_TENANT_NAMES`).
The envelope is built here; what only the database row knows at the moment of the write (the
event's `time`, the tenant's storage mode and tier, the rollout's services and status) is merged in
by the statement that writes the outbox row (`infra.db`), so the event says what the committed row
said. `source` names the deployment that publishes (`PLATFORM_EVENTS_SOURCE`): the relay stamps it
on the way out (`with_source`), so the API and the worker, which both write events, need no setting
for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tenancy.models import EventAction
from tenancy.rollouts import RolloutAction
from tenancy.status import TenantStatus

SPEC_VERSION = "1.0"
TYPE_PREFIX = "io.platform-service"
TYPE_VERSION = "v1"
DEFAULT_SOURCE = "/platform-service"
CONTENT_TYPE = "application/json"
# The rollout actions carry the family in their value (ROLLOUT_STARTED); the type does not
# repeat it (io.platform-service.rollout.started.v1).
_ROLLOUT_ACTION_PREFIX = "ROLLOUT_"


class Family(StrEnum):
    """Whose lifecycle an event tells: the NATS subject family and the Kafka topic family."""

    TENANTS = "tenants"
    ROLLOUTS = "rollouts"


# Tenant actions whose event is not their kebab case: the tenant is the event's subject
# already (`tenant.moved`, not `tenant.tenant-moved`). Every other name is unchanged.
_TENANT_NAMES = {
    EventAction.TENANT_MOVED: "moved",
    EventAction.TENANT_UPDATED: "updated",
}

# The singular used in the event type.
_TYPE_NOUN = {Family.TENANTS: "tenant", Family.ROLLOUTS: "rollout"}


def _kebab(value: str) -> str:
    return value.lower().replace("_", "-")


def tenant_event_name(action: EventAction) -> str:
    """The short name of a tenant action's event, e.g. `status-changed`, `moved`."""
    return _TENANT_NAMES.get(action) or _kebab(action.value)


def rollout_event_name(action: RolloutAction) -> str:
    """The short name of a rollout action's event, e.g. `started`."""
    return _kebab(action.value.removeprefix(_ROLLOUT_ACTION_PREFIX))


def event_type(family: Family, name: str) -> str:
    """The CloudEvents `type` of an event, e.g. `io.platform-service.tenant.created.v1`."""
    return f"{TYPE_PREFIX}.{_TYPE_NOUN[family]}.{name}.{TYPE_VERSION}"


def all_event_types() -> list[str]:
    """Every event type the platform emits: one per tenant action and rollout action."""
    return [event_type(Family.TENANTS, tenant_event_name(a)) for a in EventAction] + [
        event_type(Family.ROLLOUTS, rollout_event_name(a)) for a in RolloutAction
    ]


@dataclass(frozen=True)
class PendingEvent:
    """An event about to be written to the outbox with its audit row."""

    event_id: str
    family: Family
    subject_key: str
    name: str
    # The envelope without `time`, `source` and the row-derived `data` fields (module doc).
    envelope: dict[str, Any]


def _envelope(family: Family, subject: str, name: str, data: dict[str, Any]) -> PendingEvent:
    event_id = str(uuid.uuid4())
    return PendingEvent(
        event_id=event_id,
        family=family,
        subject_key=subject,
        name=name,
        envelope={
            "specversion": SPEC_VERSION,
            "type": event_type(family, name),
            "id": event_id,
            "subject": subject,
            "datacontenttype": CONTENT_TYPE,
            "data": data,
        },
    )


def tenant_event(
    tenant_id: str,
    action: EventAction,
    actor: str,
    old: TenantStatus | None,
    new: TenantStatus | None,
    reason: str | None,
) -> PendingEvent:
    """A tenant lifecycle event; `storageMode`, `slaTier`, `epoch` and `location` (the tenant
    directory's location JSON) come from the tenant's row in the writing transaction."""
    return _envelope(
        Family.TENANTS,
        tenant_id,
        tenant_event_name(action),
        {
            "tenantId": tenant_id,
            "oldStatus": old.value if old else None,
            "newStatus": new.value if new else None,
            "reason": reason,
            "actor": actor,
        },
    )


def rollout_event(
    rollout_id: str,
    action: RolloutAction,
    actor: str,
    reason: str | None,
) -> PendingEvent:
    """A rollout milestone event; `services` and `status` come from the rollout's row."""
    return _envelope(
        Family.ROLLOUTS,
        rollout_id,
        rollout_event_name(action),
        {"rolloutId": rollout_id, "action": action.value, "reason": reason, "actor": actor},
    )


def with_source(event: dict[str, Any], source: str) -> dict[str, Any]:
    """The outbox's event as it goes on the bus: with the publishing deployment's `source`,
    attributes in the spec's order."""
    return {"specversion": event["specversion"], "type": event["type"], "source": source} | {
        key: value for key, value in event.items() if key not in ("specversion", "type", "source")
    }
