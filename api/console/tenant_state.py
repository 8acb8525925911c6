"""What the tenant pages show, decided from the API's answers alone (pure, unit-tested): which
actions a status and a token allow, the servers a tenant may be moved to, whether a page follows
its tenant live and how fast, the list's paging links, and the tenant's runs in the Temporal Web
UI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from api.auth import DELETE_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from api.console.internal import ApiAnswer
from api.console.links import run_url
from api.console.session import Session
from api.console.web import CONSOLE, query_with
from tenancy.fleet import ServerState
from tenancy.models import EventAction, MovePhase
from tenancy.naming import deletion_workflow_id
from tenancy.status import DELETABLE, TenantStatus
from workflows.move.contracts import move_workflow_id

# Statuses a workflow is moving the tenant out of by itself: their pages follow it live.
IN_FLIGHT = frozenset(
    {
        TenantStatus.PROVISIONING,
        TenantStatus.MIGRATING,
        TenantStatus.DELETING,
        TenantStatus.MOVING,
    }
)
# Statuses whose retry, once requested, the run takes up a moment later (the API answers first).
RETRYABLE = frozenset(
    {TenantStatus.MIGRATION_ERROR, TenantStatus.PROVISION_ERROR, TenantStatus.DELETION_ERROR}
)
FAST_POLL_MS = 1500
# A scheduled deletion waits out its grace period (days, usually): looked at now and then,
# and at the fast pace once its purge is due.
SLOW_POLL_MS = 5000
PURGE_DUE = timedelta(seconds=10)


def parse_status(value: Any) -> TenantStatus | None:
    """The status the API named, or None for one this console does not know."""
    try:
        return TenantStatus(value)
    except ValueError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rows_context(query: Mapping[str, str], page: ApiAnswer) -> dict[str, Any]:
    """What `_tenant_rows.html` shows: the page's tenants, the next page's link (filters kept)
    and, while one of them is in flight, the URL that refreshes the table."""
    filters = {name: value for name, value in query.items() if name != "cursor"}
    items: list[dict[str, Any]] = page.body.get("items", []) if page.ok else []
    next_cursor = page.body.get("nextCursor") if page.ok else None
    in_flight = any(parse_status(item.get("status")) in IN_FLIGHT for item in items)
    return {
        "items": items,
        "problem": None if page.ok else page.problem,
        "next_query": query_with(filters, cursor=next_cursor) if next_cursor else None,
        "first_query": query_with(filters) if "cursor" in query else None,
        "poll_url": (
            f"{CONSOLE}/tenants?{query_with(query, fragment='rows')}" if in_flight else None
        ),
    }


@dataclass(frozen=True)
class Actions:
    """Which action forms the tenant page shows: allowed by the status and the token's scopes
    (the API checks both again)."""

    retry_migration: bool = False
    retry_provisioning: bool = False
    retry_deletion: bool = False
    delete: bool = False
    restore: bool = False
    move: bool = False
    cancel_move: bool = False

    @property
    def any(self) -> bool:
        """Whether any action is shown."""
        return any(vars(self).values())


def allowed_actions(
    status: TenantStatus | None,
    session: Session,
    pending: bool,
    move_phase: MovePhase | None = None,
) -> Actions:
    """The actions of a tenant in `status` for this operator; a retry the run has not taken up
    yet is not offered twice, nor a cancel of a move that has switched (`move_phase`)."""
    write = session.can(WRITE_SCOPE) and not pending
    delete = session.can(DELETE_SCOPE)
    servers = session.can(SERVERS_WRITE_SCOPE)
    return Actions(
        retry_migration=write and status is TenantStatus.MIGRATION_ERROR,
        retry_provisioning=write and status is TenantStatus.PROVISION_ERROR,
        retry_deletion=delete and not pending and status is TenantStatus.DELETION_ERROR,
        delete=delete and status in DELETABLE,
        restore=delete and status is TenantStatus.DELETION_SCHEDULED,
        move=servers and status is TenantStatus.ACTIVE,
        cancel_move=servers
        and status is TenantStatus.MOVING
        and move_phase is not MovePhase.SWITCHED,
    )


def move_phase(tenant: Mapping[str, Any]) -> MovePhase | None:
    """The phase of the tenant's move, or None without one (or a phase this console does not
    know)."""
    try:
        return MovePhase(str((tenant.get("move") or {}).get("phase")))
    except ValueError:
        return None


def move_targets(servers: ApiAnswer, tenant: Mapping[str, Any]) -> list[str]:
    """The servers the move form offers (`GET /api/storage-servers`): the ACTIVE ones other
    than the tenant's own. The API checks the rest (room, storage mode) when the move is asked."""
    items: list[dict[str, Any]] = servers.body.get("items", []) if servers.ok else []
    return [
        str(s["name"])
        for s in items
        if s.get("state") == ServerState.ACTIVE.value
        and s.get("name") != tenant.get("storageServer")
    ]


def retry_pending(status: TenantStatus | None, events: list[dict[str, Any]]) -> bool:
    """A retry was asked and the run has not moved the tenant yet: the newest event of a tenant
    in an error status is the request (the API answers before the run acts on it)."""
    if status not in RETRYABLE or not events:
        return False
    newest = events[-1].get("action")
    return newest in (EventAction.RETRY_REQUESTED.value, EventAction.RUN_ADOPTED.value)


def poll_interval(
    status: TenantStatus | None, tenant: Mapping[str, Any], pending: bool, now: datetime
) -> int | None:
    """How often (ms) the live fragment refreshes itself, or None when nothing is in flight."""
    if status in IN_FLIGHT or pending:
        return FAST_POLL_MS
    if status is TenantStatus.DELETION_SCHEDULED:
        purge_at = _parse_time((tenant.get("deletion") or {}).get("purgeAt"))
        due = purge_at is not None and purge_at - now <= PURGE_DUE
        return FAST_POLL_MS if due else SLOW_POLL_MS
    return None


def temporal_links(
    ui_url: str | None, namespace: str, tenant: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """Links to the tenant's runs in the Temporal Web UI (none without PLATFORM_TEMPORAL_UI_URL):
    its provisioning run, its move's run while it is moving and, once a deletion is asked, its
    deletion run."""
    ids = [("Provisioning run", str(tenant["workflowId"]))]
    if tenant.get("move"):
        ids.append(("Move run", move_workflow_id(str(tenant["id"]))))
    if tenant.get("deletion"):
        ids.append(("Deletion run", deletion_workflow_id(str(tenant["id"]))))
    links = [(label, run_url(ui_url, namespace, workflow_id)) for label, workflow_id in ids]
    return [(label, url) for label, url in links if url is not None]
