"""reference/cli.md: every platformctl command from its Typer command tree, with its usage,
help, arguments and options, and the exit codes every command shares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from cli.errors import EXIT_CODES_HELP, ExitCode
from cli.main import app
from docgen.markdown import banner, cell, code, prose, table

PATH = "reference/cli.md"
SOURCES = "the platformctl command tree (cli/main.py) and cli/errors.py"
ROOT = "platformctl"


def commands() -> Iterator[tuple[typer.Context, Any]]:
    """Every command and group with its context, root first, subcommands in their order."""
    root = typer.main.get_command(app)
    yield from _walk(root, typer.Context(root, info_name=ROOT))


def _walk(command: Any, ctx: typer.Context) -> Iterator[tuple[typer.Context, Any]]:
    if command.hidden:
        return
    yield ctx, command
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _walk(sub, typer.Context(sub, info_name=name, parent=ctx))


def exit_codes() -> list[tuple[int, str]]:
    """The exit codes and their meanings, as every command's `--help` states them."""
    text = EXIT_CODES_HELP.removeprefix("Exit codes: ").removesuffix(".")
    found = []
    for part in re.split(r"; (?=\d )", text):
        number, meaning = part.split(" ", 1)
        found.append((int(number), meaning))
    return found


_PLAIN = {"str": "text", "int": "integer", "float": "number", "bool": "boolean"}


def _type(param: TyperArgument | TyperOption, ctx: typer.Context) -> str:
    if isinstance(param, TyperOption) and param.is_flag:
        return "flag"
    shown = param.display_type(ctx).removeprefix("<").removesuffix(">")
    if shown.startswith("list[") and shown.endswith("]"):
        shown = shown.removeprefix("list[").removesuffix("]")
    shown = shown.removesuffix(" range")
    if "|" in shown:
        shown = "one of " + ", ".join(code(c) for c in shown.split("|"))
    else:
        shown = _PLAIN.get(shown, shown)
    low, high = param.min, param.max
    if low is not None and high is not None:
        shown += f", {low} to {high}"
    elif low is not None:
        shown += f", at least {low}"
    elif high is not None:
        shown += f", at most {high}"
    if param.multiple:
        shown += " (repeatable)"
    return shown


def _default(param: TyperOption) -> str:
    value = param.default
    if param.show_default is False or value is None or callable(value):
        return ""
    if param.is_flag:
        return "on" if value else "off"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple) and not value:
        return ""
    return code(str(value))


def _names(param: TyperOption) -> str:
    names = ", ".join(code(o) for o in sorted(param.opts, key=len))
    if param.secondary_opts:
        names += " / " + ", ".join(code(o) for o in param.secondary_opts)
    if param.metavar:
        names += f" {code(param.metavar)}"
    return names


def _section(ctx: typer.Context, command: Any) -> list[str]:
    depth = len(ctx.command_path.split())
    out = []
    if depth > 1:
        out.append(f"{'#' * depth} {ctx.command_path}\n")
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    out += [f"```\n{usage}\n```\n", f"{prose(command.help)}\n"]
    # Every epilog ends with the exit codes, which the page states once.
    epilog = prose((command.epilog or "").replace(EXIT_CODES_HELP, ""))
    if epilog:
        out.append(f"{epilog}\n")
    arguments = [p for p in command.params if isinstance(p, TyperArgument) and not p.hidden]
    options = [p for p in command.params if isinstance(p, TyperOption) and not p.hidden]
    if arguments:
        out.append(
            table(
                ("Argument", "Type", "Required", "Description"),
                (
                    [
                        code(p.display_name_raw.upper()),
                        _type(p, ctx),
                        "yes" if p.required else "no",
                        cell(p.help or ""),
                    ]
                    for p in arguments
                ),
            )
        )
    if options:
        out.append(
            table(
                ("Option", "Type", "Default", "Env var", "Description"),
                (
                    [
                        _names(p),
                        _type(p, ctx),
                        "required" if p.required else _default(p),
                        code(p.envvar) if isinstance(p.envvar, str) else "",
                        cell(p.help or ""),
                    ]
                    for p in options
                ),
            )
        )
    return out


def render() -> str:
    """The page."""
    out = [banner(SOURCES), f"# {ROOT} commands\n"]
    walked = list(commands())
    root_ctx, root = walked[0]
    out += _section(root_ctx, root)
    out += [
        "## Exit codes\n",
        "Every command exits with one of these codes; automation branches on them.\n",
        table(
            ("Code", "Name", "Meaning"),
            ([code(str(n)), code(ExitCode(n).name), cell(m)] for n, m in exit_codes()),
        ),
    ]
    for ctx, command in walked[1:]:
        out += _section(ctx, command)
    return "\n".join(out)
