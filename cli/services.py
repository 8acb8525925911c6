"""`platformctl services ...`: where each downstream service's migrations stand over the fleet,
and the deploy-pipeline gate `services versions NAME --require VERSION`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from cli.client import one_line
from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.session import OutputOption, session_of
from cli.versions import Requirement
from cli.views import versions_view

services_app = typer.Typer(
    help="Downstream services and their migration versions.", no_args_is_help=True
)


@services_app.command("versions", epilog=EXIT_CODES_HELP)
def versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The service's name.")],
    require: Annotated[
        str | None,
        typer.Option(
            "--require",
            metavar="VERSION",
            help="Exit 1 unless every tenant is at VERSION or later (versions compare as "
            "strings, like the API's minVersion) and no migration failed.",
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Show how many tenants are at each version of a service
    (GET /api/services/NAME/versions); with --require, the deploy gate: exit 1 when some
    tenant is below VERSION."""
    session = session_of(ctx)
    spread = session.api.get(f"/api/services/{name}/versions")
    requirement = Requirement.of(spread, require) if require is not None else None
    document = spread if requirement is None else {**spread, "requirement": requirement.document()}
    session.printer(output).show(
        document,
        lambda s: [
            *versions_view(s),
            *([Text(one_line(requirement.summary()))] if requirement else []),
        ],
    )
    if requirement is not None and not requirement.met:
        raise CliError(ExitCode.CHECK_FAILED, f"{name}: {requirement.summary()}")


@services_app.command("list", epilog=EXIT_CODES_HELP)
def list_services(ctx: typer.Context, output: OutputOption = None) -> None:
    """Every configured service with its version spread (GET /api/services)."""
    session = session_of(ctx)
    services = session.api.get("/api/services")
    session.printer(output).show(
        services, lambda doc: [view for s in doc["items"] for view in versions_view(s)]
    )
