"""`platformctl tenants ...`: provision, list, inspect, update, move, retry, delete and restore
tenants."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.live import StatusLine, progress_console
from cli.session import OutputOption, Session, session_of
from cli.views import events_view, tenant_list_view, tenant_view
from tenancy.models import EventAction, SlaTier, StorageMode
from tenancy.status import TenantStatus

tenants_app = typer.Typer(
    help="Provision, list, inspect, update, move, retry, delete and restore tenants.",
    no_args_is_help=True,
)

TenantIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")]
# `--wait` waits while a tenant is in one of these; any other status ends the wait.
IN_FLIGHT = frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATING})
# `tenants move --wait` waits while the tenant is MOVING.
MOVING = frozenset({TenantStatus.MOVING})
# What ends a move: its switch, or its rollback (by itself or by cancel-move).
MOVE_ENDS = frozenset(
    {EventAction.TENANT_MOVED, EventAction.MOVE_FAILED, EventAction.MOVE_CANCELLED}
)
# `tenants retry`: the way out of each error status (docs/operating/recovery.md).
RETRY_PATHS = {
    TenantStatus.MIGRATION_ERROR: "retry-migration",
    TenantStatus.PROVISION_ERROR: "retry-provisioning",
    TenantStatus.DELETION_ERROR: "retry-deletion",
}
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why, for the audit trail (one line).")
]
POLL_INTERVAL = 0.5


def _path(tenant_id: str, action: str = "") -> str:
    return f"/api/tenants/{tenant_id}" + (f"/{action}" if action else "")


def describe(tenant: dict[str, Any]) -> str:
    """One status line: the tenant's status, why, and each service's migration."""
    line = f"{tenant['id']}: {tenant['status']}"
    if tenant.get("statusReason"):
        line += f" ({tenant['statusReason']})"
    move = tenant.get("move")
    if move:
        line += f" - {move['fromServer']} -> {move['toServer']} {move['phase']}"
    services = [
        f"{m['service']} {m['status']}"
        + (f" {m['version']}" if m.get("version") else "")
        # Retries of a service that does not answer: the line moves with each attempt.
        + (
            f" [attempts {m['attempts']}]"
            if m["status"] != "SUCCEEDED" and m.get("attempts")
            else ""
        )
        for m in tenant.get("migrations") or []
    ]
    if services:
        line += " - " + ", ".join(services)
    return line


def wait_until_settled(
    session: Session,
    tenant: dict[str, Any],
    timeout: float,
    in_flight: frozenset[TenantStatus] = IN_FLIGHT,
) -> dict[str, Any]:
    """Poll the tenant until it leaves `in_flight` (PROVISIONING/MIGRATING unless given) or
    `timeout` seconds pass, showing a live status line; returns the last tenant read."""
    deadline = time.monotonic() + timeout
    with StatusLine(progress_console()) as line:
        while True:
            line.update(describe(tenant))
            if tenant["status"] not in in_flight or time.monotonic() > deadline:
                return tenant
            time.sleep(POLL_INTERVAL)
            tenant = session.api.get(_path(tenant["id"]))


def move_outcome(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The event that ended the tenant's latest move (TENANT_MOVED, MOVE_FAILED or
    MOVE_CANCELLED), or None when none has since it was requested."""
    for event in reversed(events):
        if event.get("action") in MOVE_ENDS:
            return dict(event)
        if event.get("action") == EventAction.MOVE_REQUESTED:
            return None
    return None


WaitOption = Annotated[
    float, typer.Option("--timeout", min=0, help="Seconds --wait waits at most.")
]


@tenants_app.command("create", epilog=EXIT_CODES_HELP)
def create(
    ctx: typer.Context,
    tenant_id: TenantIdArgument,
    name: Annotated[str, typer.Option("--name", help="Display name (1-200 characters).")],
    mode: Annotated[
        StorageMode,
        typer.Option("--mode", case_sensitive=False, help="A schema or a database of its own."),
    ],
    tier: Annotated[SlaTier, typer.Option("--tier", case_sensitive=False, help="SLA tier.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the tenant until ACTIVE or an error status; exit 0 only if ACTIVE.",
        ),
    ] = False,
    timeout: WaitOption = 600,
    output: OutputOption = None,
) -> None:
    """Provision a tenant (POST /api/tenants)."""
    session = session_of(ctx)
    tenant = session.api.post(
        "/api/tenants",
        {"id": tenant_id, "name": name, "storageMode": mode.value, "slaTier": tier.value},
    )
    if wait:
        tenant = wait_until_settled(session, tenant, timeout)
    session.printer(output).show(tenant, tenant_view)
    if wait and tenant["status"] != TenantStatus.ACTIVE:
        still = " still" if tenant["status"] in IN_FLIGHT else ""
        raise CliError(
            ExitCode.CHECK_FAILED,
            f"tenant {tenant_id} is{still} {tenant['status']}, not ACTIVE"
            + (f": {tenant['statusReason']}" if tenant.get("statusReason") else ""),
        )


@tenants_app.command("list", epilog=EXIT_CODES_HELP)
def list_tenants(
    ctx: typer.Context,
    status: Annotated[
        TenantStatus | None,
        typer.Option(
            "--status",
            case_sensitive=False,
            help="Only this status (DELETED lists the tombstones, which are left out otherwise).",
        ),
    ] = None,
    tier: Annotated[
        SlaTier | None, typer.Option("--tier", case_sensitive=False, help="Only this tier.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many tenants (pages followed).")
    ] = 100,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Go on from a previous list's nextCursor.")
    ] = None,
    output: OutputOption = None,
) -> None:
    """List tenants, oldest first (GET /api/tenants, following nextCursor up to --limit)."""
    session = session_of(ctx)
    page = session.api.collect(
        "/api/tenants",
        limit,
        status=status.value if status else None,
        slaTier=tier.value if tier else None,
        cursor=cursor,
    )
    session.printer(output).show(page, tenant_list_view)


@tenants_app.command("get", epilog=EXIT_CODES_HELP)
def get(ctx: typer.Context, tenant_id: TenantIdArgument, output: OutputOption = None) -> None:
    """Show a tenant with its per-service migrations (GET /api/tenants/ID)."""
    session = session_of(ctx)
    session.printer(output).show(session.api.get(_path(tenant_id)), tenant_view)


@tenants_app.command("events", epilog=EXIT_CODES_HELP)
def events(ctx: typer.Context, tenant_id: TenantIdArgument, output: OutputOption = None) -> None:
    """Show a tenant's audit trail, oldest first (GET /api/tenants/ID/events)."""
    session = session_of(ctx)
    session.printer(output).show(session.api.get(_path(tenant_id, "events")), events_view)


@tenants_app.command("retry", epilog=EXIT_CODES_HELP)
def retry(ctx: typer.Context, tenant_id: TenantIdArgument, output: OutputOption = None) -> None:
    """Retry what failed, by the tenant's status: MIGRATION_ERROR retries the migrations,
    PROVISION_ERROR the provisioning, DELETION_ERROR the deletion. Any other status: exit 4."""
    session = session_of(ctx)
    status = session.api.get(_path(tenant_id))["status"]
    action = RETRY_PATHS.get(status)
    if action is None:
        raise CliError(
            ExitCode.CONFLICT,
            f"tenant {tenant_id} is {status}: nothing to retry (retry takes "
            + ", ".join(RETRY_PATHS)
            + ")",
        )
    session.printer(output).show(session.api.post(_path(tenant_id, action)), tenant_view)


@tenants_app.command("delete", epilog=EXIT_CODES_HELP)
def delete(
    ctx: typer.Context,
    tenant_id: TenantIdArgument,
    grace: Annotated[
        int | None,
        typer.Option(
            "--grace",
            min=0,
            metavar="SECONDS",
            help="Seconds until the purge (0: at once; default: the server's grace period).",
        ),
    ] = None,
    reason: ReasonOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed without a terminal).")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Schedule a tenant's deletion (DELETE /api/tenants/ID); restore undoes it until the
    grace period is over. Asks for confirmation unless --yes."""
    session = session_of(ctx)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                ExitCode.USAGE, "not deleting without --yes: there is no terminal to ask on"
            )
        when = (
            "the server's default grace period"
            if grace is None
            else ("no grace period: the purge starts at once" if grace == 0 else f"{grace} s")
        )
        typer.confirm(f"Delete tenant {tenant_id} ({when})?", abort=True, err=True)
    tenant = session.api.delete(_path(tenant_id), graceSeconds=grace, reason=reason)
    session.printer(output).show(tenant, tenant_view)


@tenants_app.command("restore", epilog=EXIT_CODES_HELP)
def restore(
    ctx: typer.Context,
    tenant_id: TenantIdArgument,
    reason: ReasonOption = None,
    output: OutputOption = None,
) -> None:
    """Cancel a scheduled deletion (POST /api/tenants/ID/restore): back to the status before."""
    session = session_of(ctx)
    tenant = session.api.post(_path(tenant_id, "restore"), reason=reason)
    session.printer(output).show(tenant, tenant_view)


@tenants_app.command("update", epilog=EXIT_CODES_HELP)
def update(
    ctx: typer.Context,
    tenant_id: TenantIdArgument,
    name: Annotated[
        str | None, typer.Option("--name", help="New display name (1-200 characters).")
    ] = None,
    tier: Annotated[
        SlaTier | None, typer.Option("--tier", case_sensitive=False, help="New SLA tier.")
    ] = None,
    output: OutputOption = None,
) -> None:
    """Change a tenant's name or SLA tier (PATCH /api/tenants/ID; needs tenants:write). A new
    name is immediate; a tier whose pool is not the pool of the tenant's server moves the
    tenant there (MOVING: follow it with `tenants get`). The storage mode never changes."""
    session = session_of(ctx)
    body: dict[str, str] = {}
    if name is not None:
        body["name"] = name
    if tier is not None:
        body["slaTier"] = tier.value
    if not body:
        raise CliError(ExitCode.USAGE, "nothing to update: give --name or --tier")
    session.printer(output).show(session.api.patch(_path(tenant_id), body), tenant_view)


@tenants_app.command("move", epilog=EXIT_CODES_HELP)
def move(
    ctx: typer.Context,
    tenant_id: TenantIdArgument,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="SERVER",
            help="The storage server to move to (default: placement in the tenant's pool, "
            "never its current server).",
        ),
    ] = None,
    reason: ReasonOption = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the move until the tenant leaves MOVING; exit 0 only if it switched "
            "(a move that failed or was cancelled is rolled back: exit 1).",
        ),
    ] = False,
    timeout: WaitOption = 600,
    output: OutputOption = None,
) -> None:
    """Move an ACTIVE tenant's storage to another server (POST /api/tenants/ID/move; needs
    servers:write): MOVING at once, then frozen, copied, verified and switched by its
    workflow, or rolled back by itself when a step fails."""
    session = session_of(ctx)
    body = {key: value for key, value in (("toServer", to), ("reason", reason)) if value}
    tenant = session.api.post(_path(tenant_id, "move"), body)
    if wait:
        tenant = wait_until_settled(session, tenant, timeout, MOVING)
    session.printer(output).show(tenant, tenant_view)
    if not wait:
        return
    where = f"{tenant['status']} on {tenant.get('storageServer')}"
    if tenant["status"] in MOVING:
        raise CliError(ExitCode.CHECK_FAILED, f"tenant {tenant_id} is still {describe(tenant)}")
    ended = move_outcome(session.api.get(_path(tenant_id, "events"))["items"])
    if ended is None or ended["action"] != EventAction.TENANT_MOVED:
        what = (
            f"{ended['action']}: {ended.get('reason') or 'no reason given'}"
            if ended
            else "no end of it is recorded"
        )
        raise CliError(
            ExitCode.CHECK_FAILED,
            f"tenant {tenant_id}'s move did not complete ({what}); it is {where}",
        )
    typer.echo(f"tenant {tenant_id} moved to {tenant.get('storageServer')}", err=True)


@tenants_app.command("cancel-move", epilog=EXIT_CODES_HELP)
def cancel_move(
    ctx: typer.Context, tenant_id: TenantIdArgument, output: OutputOption = None
) -> None:
    """Roll a tenant's move back before its switch (POST /api/tenants/ID/cancel-move; needs
    servers:write): its run unfreezes the source and drops the partial target, and the
    tenant is ACTIVE on its source a moment later. Exit 4 when it is not MOVING or its move
    has switched."""
    session = session_of(ctx)
    tenant = session.api.post(_path(tenant_id, "cancel-move"))
    session.printer(output).show(tenant, tenant_view)
