"""`platformctl`: the root command, its global options and the one place where a CliError
becomes its line on stderr and its exit code (cli.errors)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cli.client import one_line
from cli.errors import EXIT_CODES_HELP, CliError
from cli.output import Output
from cli.rollouts import rollouts_app
from cli.servers import servers_app
from cli.services import services_app
from cli.session import Session
from cli.tenants import tenants_app

# What `make dev` serves; PLATFORM_URL or --url for anything else.
DEFAULT_URL = "http://127.0.0.1:8000"


class _Reporting(TyperGroup):
    """The root group: every subcommand runs inside its invoke, so errors are reported once."""

    # Typer makes every context a typer.Context; the base class names Click's (vendored) one.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except CliError as error:
            # Messages can carry the server's text (a statusReason): one line, no escapes.
            typer.echo(f"platformctl: error: {one_line(error.message)}", err=True)
            raise typer.Exit(int(error.exit_code)) from None


app = typer.Typer(
    name="platformctl",
    cls=_Reporting,
    help="Operate Platform Service from a terminal or a pipeline: tenants, fleet rollouts, "
    "service versions, storage servers. Results go to stdout, progress and errors to stderr.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tenants_app, name="tenants", epilog=EXIT_CODES_HELP)
app.add_typer(rollouts_app, name="rollouts", epilog=EXIT_CODES_HELP)
app.add_typer(services_app, name="services", epilog=EXIT_CODES_HELP)
app.add_typer(servers_app, name="servers", epilog=EXIT_CODES_HELP)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="PLATFORM_URL", help="The API's base URL.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="PLATFORM_TOKEN", show_default=False, help="A bearer token."
        ),
    ] = None,
    output: Annotated[
        Output,
        typer.Option(
            "--output",
            "-o",
            case_sensitive=False,
            help="json: one JSON document on stdout per command; table: for people.",
        ),
    ] = Output.table,
) -> None:
    """The global options; each command also takes --output."""
    ctx.obj = Session(url=url, token=token, output=output, context=ctx)


def run() -> None:
    """The console script's entry point."""
    app(prog_name="platformctl")
