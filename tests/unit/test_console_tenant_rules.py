"""The tenant pages' pure rules: which actions a status and a token allow, the servers a move
may go to, when a page follows its tenant live and how fast, and the list's paging links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.auth import DELETE_SCOPE, READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE, Principal
from api.console.internal import ApiAnswer
from api.console.session import Session
from api.console.tenant_state import (
    FAST_POLL_MS,
    SLOW_POLL_MS,
    Actions,
    allowed_actions,
    move_phase,
    move_targets,
    poll_interval,
    retry_pending,
    rows_context,
    temporal_links,
)
from tenancy.models import MovePhase
from tenancy.status import TenantStatus as S

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def session(*scopes: str) -> Session:
    return Session("token", Principal("operator", frozenset(scopes)), "csrf")


OPERATOR = session(READ_SCOPE, WRITE_SCOPE, DELETE_SCOPE)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.PROVISIONING, Actions(delete=True)),
        (S.MIGRATING, Actions(delete=True)),
        (S.ACTIVE, Actions(delete=True)),
        (S.MIGRATION_ERROR, Actions(retry_migration=True, delete=True)),
        (S.PROVISION_ERROR, Actions(retry_provisioning=True, delete=True)),
        (S.DELETION_SCHEDULED, Actions(restore=True)),
        (S.DELETING, Actions()),
        (S.DELETION_ERROR, Actions(retry_deletion=True)),
        (S.DELETED, Actions()),
        (S.MOVING, Actions()),
    ],
)
def test_each_status_offers_its_actions(status: S, expected: Actions) -> None:
    assert allowed_actions(status, OPERATOR, pending=False) == expected


def test_scopes_hide_what_the_token_cannot_do() -> None:
    reader = session(READ_SCOPE)
    assert not any(allowed_actions(status, reader, pending=False).any for status in S)
    writer = session(READ_SCOPE, WRITE_SCOPE)
    assert allowed_actions(S.MIGRATION_ERROR, writer, pending=False) == Actions(
        retry_migration=True
    )
    assert allowed_actions(S.DELETION_SCHEDULED, writer, pending=False) == Actions()


def test_servers_write_moves_an_active_tenant_and_cancels_a_move_until_its_switch() -> None:
    mover = session(READ_SCOPE, SERVERS_WRITE_SCOPE)
    assert allowed_actions(S.ACTIVE, mover, pending=False) == Actions(move=True)
    assert allowed_actions(S.MOVING, mover, False, MovePhase.COPYING) == Actions(cancel_move=True)
    assert allowed_actions(S.MOVING, mover, False, MovePhase.SWITCHED) == Actions()
    assert allowed_actions(S.MIGRATION_ERROR, mover, pending=False) == Actions()
    assert allowed_actions(S.MOVING, OPERATOR, False, MovePhase.COPYING) == Actions()


def test_a_move_goes_to_an_active_server_other_than_the_tenant_s_own() -> None:
    servers = ApiAnswer(
        200,
        {
            "items": [
                {"name": "pg-a", "state": "ACTIVE"},
                {"name": "pg-b", "state": "CORDONED"},
                {"name": "pg-c", "state": "ACTIVE"},
                {"name": "pg-d", "state": "DRAINING"},
            ]
        },
    )
    assert move_targets(servers, {"storageServer": "pg-a"}) == ["pg-c"]
    assert move_targets(ApiAnswer(403, {"detail": "no"}), {"storageServer": "pg-a"}) == []
    assert move_phase({"move": {"phase": "FROZEN"}}) is MovePhase.FROZEN
    assert move_phase({"move": None}) is None
    assert move_phase({"move": {"phase": "LATER"}}) is None


def test_a_retry_already_asked_is_not_offered_again() -> None:
    assert allowed_actions(S.MIGRATION_ERROR, OPERATOR, pending=True) == Actions(delete=True)
    assert allowed_actions(S.DELETION_ERROR, OPERATOR, pending=True) == Actions()


def event(action: str) -> dict[str, Any]:
    return {"action": action}


def test_a_retry_is_pending_until_the_run_moves_the_tenant() -> None:
    asked = [event("CREATED"), event("STATUS_CHANGED"), event("RETRY_REQUESTED")]
    assert retry_pending(S.MIGRATION_ERROR, asked)
    assert retry_pending(S.PROVISION_ERROR, [*asked, event("RUN_ADOPTED")])
    assert not retry_pending(S.MIGRATION_ERROR, [*asked, event("STATUS_CHANGED")])
    assert not retry_pending(S.ACTIVE, asked)
    assert not retry_pending(S.MIGRATION_ERROR, [])


def deletion(purge_in: timedelta) -> dict[str, Any]:
    return {"deletion": {"purgeAt": (NOW + purge_in).isoformat().replace("+00:00", "Z")}}


def test_what_is_in_flight_is_followed_and_a_due_purge_faster() -> None:
    for status in (S.PROVISIONING, S.MIGRATING, S.DELETING, S.MOVING):
        assert poll_interval(status, {}, False, NOW) == FAST_POLL_MS
    for settled in (S.ACTIVE, S.MIGRATION_ERROR, S.DELETED, S.DELETION_ERROR, None):
        assert poll_interval(settled, {}, False, NOW) is None
    assert poll_interval(S.MIGRATION_ERROR, {}, True, NOW) == FAST_POLL_MS
    scheduled = S.DELETION_SCHEDULED
    assert poll_interval(scheduled, deletion(timedelta(days=7)), False, NOW) == SLOW_POLL_MS
    assert poll_interval(scheduled, deletion(timedelta(seconds=3)), False, NOW) == FAST_POLL_MS
    assert poll_interval(scheduled, deletion(-timedelta(minutes=1)), False, NOW) == FAST_POLL_MS


def page(*statuses: str, next_cursor: str | None = None) -> ApiAnswer:
    items = [{"id": f"t{n}", "status": status} for n, status in enumerate(statuses)]
    return ApiAnswer(200, {"items": items, "nextCursor": next_cursor})


def test_paging_links_keep_the_filters() -> None:
    query = {"status": "ACTIVE", "idPrefix": "acme", "cursor": "c1"}
    rows = rows_context(query, page("ACTIVE", next_cursor="c2"))
    assert rows["next_query"] == "status=ACTIVE&idPrefix=acme&cursor=c2"
    assert rows["first_query"] == "status=ACTIVE&idPrefix=acme"
    assert rows["poll_url"] is None
    first = rows_context({}, page("ACTIVE"))
    assert (first["next_query"], first["first_query"]) == (None, None)


def test_the_table_refreshes_while_a_listed_tenant_is_in_flight() -> None:
    rows = rows_context({"slaTier": "BASIC"}, page("ACTIVE", "MIGRATING"))
    assert rows["poll_url"] == "/console/tenants?slaTier=BASIC&fragment=rows"
    refused = rows_context({}, ApiAnswer(422, {"detail": "invalid cursor"}))
    assert refused["problem"] == "invalid cursor"
    assert refused["items"] == []


def test_temporal_links_name_the_provisioning_run_and_the_deletion_run_once_asked() -> None:
    tenant: dict[str, Any] = {"id": "acme", "workflowId": "tenant-provision-acme"}
    assert temporal_links(None, "default", tenant) == []
    ui = "https://temporal.internal/ui/"
    assert temporal_links(ui, "prod ns", tenant) == [
        (
            "Provisioning run",
            "https://temporal.internal/ui/namespaces/prod%20ns/workflows/tenant-provision-acme",
        )
    ]
    deleted = tenant | {"deletion": {"purgeAt": "2026-12-07T12:00:00Z"}}
    assert temporal_links(ui, "default", deleted)[1] == (
        "Deletion run",
        "https://temporal.internal/ui/namespaces/default/workflows/tenant-delete-acme",
    )
    moving = tenant | {"move": {"phase": "COPYING"}}
    assert temporal_links(ui, "default", moving)[1] == (
        "Move run",
        "https://temporal.internal/ui/namespaces/default/workflows/tenant-move-acme",
    )
