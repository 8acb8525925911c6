"""`platformctl servers ...`: the storage servers tenants are placed on, and cordons (a
cordoned server takes no new tenant and keeps serving its own)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.errors import EXIT_CODES_HELP
from cli.session import OutputOption, session_of
from cli.views import server_list_view, server_view

servers_app = typer.Typer(
    help="Storage servers: where tenants' storage is placed; cordon and uncordon.",
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
