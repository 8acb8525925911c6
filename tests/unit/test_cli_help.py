"""Every platformctl command documents the exit codes in its --help."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from cli.errors import EXIT_CODES_HELP, ExitCode
from cli.main import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


def test_every_command_shows_the_exit_codes_under_its_help() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert ("tenants", "create") in paths
    assert ("rollouts", "retry-failed") in paths
    assert ("servers", "uncordon") in paths
    assert {("tenants", "move"), ("tenants", "cancel-move"), ("tenants", "update")} <= set(paths)
    assert ("servers", "drain") in paths
    assert ("servers", "cancel-drain") in paths
    assert len(paths) == 30
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        # Rich wraps the epilog to the width: compare the words.
        assert " ".join(EXIT_CODES_HELP.split()) in " ".join(result.stdout.split()), path


def test_the_help_names_every_exit_code() -> None:
    for code in ExitCode:
        assert f"{int(code)} " in EXIT_CODES_HELP
