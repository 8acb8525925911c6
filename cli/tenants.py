"""`platformctl tenants ...`: provision, list, inspect, retry, delete and restore tenants."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.live import StatusLine, progress_console
from cli.session import OutputOption, Session, session_of
from cli.views import events_view, tenant_list_view, tenant_view
from tenancy.models import SlaTier, StorageMode
from tenancy.status import TenantStatus

tenants_app = typer.Typer(
    help="Provision, list, inspect, retry, delete and restore tenants.", no_args_is_help=True
)

TenantIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")]
# `--wait` waits while a tenant is in one of these; any other status ends the wait.
IN_FLIGHT = frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATING})
# `tenants retry`: the way out of each error status (README, Recovery).
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


def wait_until_settled(session: Session, tenant: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the tenant until it leaves PROVISIONING/MIGRATING or `timeout` seconds pass,
    showing a live status line; returns the last tenant read."""
    deadline = time.monotonic() + timeout
    with StatusLine(progress_console()) as line:
        while True:
            line.update(describe(tenant))
            if tenant["status"] not in IN_FLIGHT or time.monotonic() > deadline:
                return tenant
            time.sleep(POLL_INTERVAL)
            tenant = session.api.get(_path(tenant["id"]))


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
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds --wait waits at most.")
    ] = 600,
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
