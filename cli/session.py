"""What every command shares: the API client of this invocation and the chosen output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from cli.client import ApiClient
from cli.output import Output, Printer

OutputOption = Annotated[
    Output | None,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="json: one JSON document on stdout (the API's camelCase fields); "
        "table: for people. Overrides the global --output.",
    ),
]


@dataclass
class Session:
    """The global options, and the one HTTP client of the invocation, made on first use (so
    `--help` needs neither URL nor token) and closed when the command ends."""

    url: str
    token: str | None
    output: Output
    context: typer.Context
    _api: ApiClient | None = field(default=None, repr=False)

    @property
    def api(self) -> ApiClient:
        """The API client (one per invocation)."""
        if self._api is None:
            self._api = self.context.with_resource(ApiClient(self.url, self.token))
        return self._api

    def printer(self, output: Output | None) -> Printer:
        """The printer of a command's result: its own `--output`, else the global one."""
        return Printer(output or self.output)


def session_of(ctx: typer.Context) -> Session:
    """The session the root callback made."""
    session = ctx.find_object(Session)
    assert session is not None, "the root callback makes the session"
    return session
