"""`platformctl servers ...`: the storage servers tenants are placed on, cordons (a
cordoned server takes no new tenant and keeps serving its own) and drains (every tenant moved
off the server)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.live import StatusLine, progress_console
from cli.session import OutputOption, Session, session_of
from cli.views import drain_progress, server_list_view, server_view

servers_app = typer.Typer(
    help="Storage servers: where tenants' storage is placed; cordon, uncordon and drain.",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The storage server's name.")]
ReasonOption = Annotated[
    str | None,
    typer.Option("--reason", help="Why, for the server's audit trail (at most 500 characters)."),
]


def _path(name: str, action: str = "") -> str:
    return f"/api/storage-servers/{name}" + (f"/{action}" if action else "")


@servers_app.command("list", epilog=EXIT_CODES_HELP)
def list_servers(ctx: typer.Context, output: OutputOption = None) -> None:
    """Every configured storage server: pool, state, tenants of capacity, tiers, last check
    (GET /api/storage-servers)."""
    session = session_of(ctx)
    session.printer(output).show(session.api.get("/api/storage-servers"), server_list_view)


@servers_app.command("show", epilog=EXIT_CODES_HELP)
def show(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """One storage server and its audit trail (GET /api/storage-servers/NAME and its
    /events); the JSON document is the server with its `events`."""
    session = session_of(ctx)
    server: dict[str, Any] = session.api.get(_path(name))
    events = session.api.get(_path(name, "events"))
    session.printer(output).show({**server, "events": events["items"]}, server_view)


def _action(verb: str, doc: str) -> None:
    """Register `servers VERB NAME [--reason TEXT]`: POST /api/storage-servers/NAME/VERB."""

    def command(
        ctx: typer.Context,
        name: NameArgument,
        reason: ReasonOption = None,
        output: OutputOption = None,
    ) -> None:
        session = session_of(ctx)
        body = {"reason": reason} if reason is not None else {}
        session.printer(output).show(session.api.post(_path(name, verb), body), server_view)

    command.__doc__ = doc
    servers_app.command(verb, epilog=EXIT_CODES_HELP)(command)


_action(
    "cordon",
    "Place no new tenant on the server; its tenants keep being served (needs servers:write; "
    "exit 4 when it is cordoned already).",
)
_action(
    "uncordon",
    "Let the server take new tenants again (needs servers:write; exit 4 when it is active).",
)


POLL_INTERVAL = 0.5


def _drain_ended(server: dict[str, Any]) -> bool:
    drain = server.get("drain") or {}
    return server["state"] in ("DRAINED", "CORDONED") or drain.get("endedAt") is not None


def watch_drain(session: Session, server: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the server until its drain ends (DRAINED, CORDONED, or its run over with tenants
    left) or `timeout` seconds pass, printing its progress as it changes."""
    deadline = time.monotonic() + timeout
    with StatusLine(progress_console()) as line:
        while True:
            line.update(f"{server['name']} {server['state']}: {drain_progress(server)}")
            if _drain_ended(server) or time.monotonic() > deadline:
                return server
            time.sleep(POLL_INTERVAL)
            server = session.api.get(_path(server["name"]))


@servers_app.command("drain", epilog=EXIT_CODES_HELP)
def drain(
    ctx: typer.Context,
    name: NameArgument,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=32, help="How many tenants move at once."),
    ] = 4,
    reason: ReasonOption = None,
    watch_it: Annotated[
        bool,
        typer.Option(
            "--watch", help="Print the drain's progress until it ends; exit 0 only if DRAINED."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds --watch watches at most.")
    ] = 3600,
    output: OutputOption = None,
) -> None:
    """Move every tenant off the server by placement in its pool, CONCURRENCY at once: it is
    DRAINING (takes no new tenant), then DRAINED when empty (needs servers:write; exit 4 when
    it is drained or its drain runs already)."""
    session = session_of(ctx)
    body: dict[str, Any] = {"concurrency": concurrency}
    if reason is not None:
        body["reason"] = reason
    server: dict[str, Any] = session.api.post(_path(name, "drain"), body)
    if watch_it:
        server = watch_drain(session, server, timeout)
    session.printer(output).show(server, server_view)
    if watch_it and server["state"] != "DRAINED":
        ended = _drain_ended(server)
        raise CliError(
            ExitCode.CHECK_FAILED,
            f"storage server {name} "
            + (f"ended {server['state']}" if ended else f"is still {server['state']}")
            + f" ({drain_progress(server)})",
        )


@servers_app.command("cancel-drain", epilog=EXIT_CODES_HELP)
def cancel_drain(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """Stop the server's drain: no further tenant moves, the moves in flight finish, then it
    is CORDONED (needs servers:write; exit 4 unless it is DRAINING)."""
    session = session_of(ctx)
    session.printer(output).show(session.api.post(_path(name, "cancel-drain"), {}), server_view)
