"""The lifecycle events' format: type names, the envelope, one schema per type."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from infra.db.outbox import OutboxRow
from infra.events.cloudevents import (
    Family,
    all_event_types,
    event_type,
    rollout_event,
    rollout_event_name,
    tenant_event,
    tenant_event_name,
    with_source,
)
from infra.events.nats import subject_of
from infra.events.relay import message_of
from tenancy.models import EventAction
from tenancy.rollouts import RolloutAction
from tenancy.status import TenantStatus
from tests.support.events import SCHEMAS, schema_for, validate


@pytest.mark.parametrize(
    ("action", "name"),
    [
        (EventAction.STATUS_CHANGED, "status-changed"),
        (EventAction.CREATED, "created"),
        (EventAction.DELETION_REQUESTED, "deletion-requested"),
        (EventAction.VERSION_CHANGED, "version-changed"),
        # A move's: named by what happened to the tenant, as the issue writes them.
        (EventAction.TENANT_MOVED, "moved"),
        (EventAction.MOVE_FAILED, "move-failed"),
        (EventAction.MOVE_REQUESTED, "move-requested"),
        (EventAction.MOVE_CANCELLED, "move-cancelled"),
        (EventAction.TENANT_UPDATED, "updated"),
    ],
)
def test_tenant_actions_are_named_in_kebab_case(action: EventAction, name: str) -> None:
    assert tenant_event_name(action) == name


def test_rollout_actions_drop_their_prefix() -> None:
    assert rollout_event_name(RolloutAction.STARTED) == "started"
    assert event_type(Family.ROLLOUTS, "started") == "io.platform-service.rollout.started.v1"


def test_the_issue_s_example_type() -> None:
    assert (
        event_type(Family.TENANTS, tenant_event_name(EventAction.STATUS_CHANGED))
        == "io.platform-service.tenant.status-changed.v1"
    )
    assert (
        event_type(Family.TENANTS, tenant_event_name(EventAction.TENANT_MOVED))
        == "io.platform-service.tenant.moved.v1"
    )


def test_every_action_has_a_type_and_a_schema_and_no_schema_is_orphaned() -> None:
    types = all_event_types()
    assert len(types) == len(set(types)) == len(EventAction) + len(RolloutAction)
    on_disk = {path.name.removesuffix(".json") for path in SCHEMAS.glob("*.json")}
    assert on_disk == set(types)
    for event_type_ in types:
        schema = schema_for(event_type_)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["type"] == {"const": event_type_}


def test_a_tenant_event_as_it_leaves_the_relay_matches_its_schema() -> None:
    pending = tenant_event(
        "acme_corp",
        EventAction.STATUS_CHANGED,
        "workflow:tenant-provision-acme_corp",
        TenantStatus.PROVISIONING,
        TenantStatus.MIGRATING,
        None,
    )
    # What the writing statement adds from the row (see infra.db.repository.append_event).
    stored = pending.envelope | {"time": "2026-11-30T16:00:00.123456Z"}
    stored["data"] = stored["data"] | {
        "storageMode": "SCHEMA",
        "slaTier": "PREMIUM",
        "epoch": 3,
        "location": {
            "tenantId": "acme_corp",
            "status": "MIGRATING",
            "storageMode": "SCHEMA",
            "storageServer": "default",
            "jdbcUrl": "jdbc:postgresql://127.0.0.1:5432/tenants?currentSchema=tenant_acme_corp",
            "epoch": 3,
        },
    }
    row = OutboxRow(
        id=pending.event_id,
        seq=1,
        family=pending.family.value,
        subject_key="acme_corp",
        name=pending.name,
        event=stored,
    )
    message = message_of(row, "/platform-service/eu-1")
    event = json.loads(message.body)
    validate(event)
    assert list(event)[:3] == ["specversion", "type", "source"]
    assert event["source"] == "/platform-service/eu-1"
    assert event["subject"] == "acme_corp"
    assert uuid.UUID(event["id"]).version == 4
    assert message.event_id == event["id"]
    assert subject_of(message) == "platform.tenants.acme_corp.status-changed"


def test_a_schema_refuses_an_event_of_another_shape() -> None:
    pending = rollout_event("r1", RolloutAction.PAUSED, "alice", "lunch")
    event = with_source(pending.envelope, "/platform-service") | {"time": "2026-11-30T16:00:00Z"}
    # The row-derived fields are missing: the schema says so.
    with pytest.raises(jsonschema.ValidationError):
        validate(event)
    event["data"] = event["data"] | {"services": ["backend-service"], "status": "PAUSED"}
    validate(event)
    event["type"] = "io.platform-service.rollout.started.v1"
    with pytest.raises(jsonschema.ValidationError):
        validate(event)


def test_a_tenant_schema_takes_a_location_only_of_the_directory_s_shape() -> None:
    pending = tenant_event("acme_corp", EventAction.CREATED, "alice", None, None, None)
    event = with_source(pending.envelope, "/platform-service") | {"time": "2026-11-30T16:00:00Z"}
    location = {
        "tenantId": "acme_corp",
        "status": "PROVISIONING",
        "storageMode": "SCHEMA",
        "storageServer": None,
        "jdbcUrl": None,
        "epoch": 1,
    }
    event["data"] = event["data"] | {
        "storageMode": "SCHEMA",
        "slaTier": "BASIC",
        "epoch": 1,
        "location": location,
    }
    validate(event)
    for broken in ({**location, "epoch": "1"}, {**location, "extra": 1}, {"tenantId": "acme"}):
        event["data"]["location"] = broken
        with pytest.raises(jsonschema.ValidationError):
            validate(event)


def test_a_move_s_events_with_moving_statuses_match_their_schemas() -> None:
    for action, old, new, status in (
        (EventAction.MOVE_REQUESTED, None, None, "MOVING"),
        (EventAction.STATUS_CHANGED, TenantStatus.ACTIVE, TenantStatus.MOVING, "MOVING"),
        (EventAction.TENANT_MOVED, None, None, "ACTIVE"),
        (EventAction.MOVE_FAILED, None, None, "ACTIVE"),
        (EventAction.TENANT_UPDATED, None, None, "ACTIVE"),
    ):
        pending = tenant_event("acme_corp", action, "alice", old, new, "pg-a -> pg-b")
        stored = pending.envelope | {"time": "2026-12-06T19:00:00Z"}
        stored["data"] = stored["data"] | {
            "storageMode": "SCHEMA",
            "slaTier": "PREMIUM",
            "epoch": 4,
            "location": {
                "tenantId": "acme_corp",
                "status": status,
                "storageMode": "SCHEMA",
                "storageServer": "pg-b",
                "jdbcUrl": "jdbc:postgresql://127.0.0.1:5433/tenants?currentSchema=tenant_acme",
                "epoch": 4,
            },
        }
        row = OutboxRow(
            id=pending.event_id,
            seq=1,
            family=pending.family.value,
            subject_key="acme_corp",
            name=pending.name,
            event=stored,
        )
        message = message_of(row, "/platform-service")
        validate(json.loads(message.body))
        assert subject_of(message) == f"platform.tenants.acme_corp.{tenant_event_name(action)}"
