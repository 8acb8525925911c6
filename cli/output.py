"""What platformctl prints: one JSON document for automation (`--output json`) or Rich tables
for people (`--output table`, the default), on stdout. Progress of `--wait`/`--watch`
(cli.live) and errors go to stderr, so stdout holds the result alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console, RenderableType


class Output(StrEnum):
    """`--output`: json for automation, table for people."""

    json = "json"
    table = "table"


Renderer = Callable[[Any], Iterable[RenderableType]]
# Off a terminal (a CI log, a file) Rich would assume 80 columns and fold the tables; these
# go to readers that scroll sideways, so give them room unless COLUMNS says otherwise.
PLAIN_WIDTH = 200


def _json_escape(character: str) -> str:
    code = ord(character)
    if code > 0xFFFF:
        # Beyond the BMP JSON writes a surrogate pair.
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def printable_json(document: Any) -> str:
    """`document` as indented JSON with every character that is not printable written as a
    JSON escape: the same document, safe on a terminal. (Outside its strings the text is
    printable ASCII, spaces and newlines; inside them json.dumps(ensure_ascii=False) escapes
    only C0 controls, so a C1 control or a bidi override would still be raw.)"""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in text)


class Printer:
    """Prints a command's result in the chosen output."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.console = Console(highlight=False)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console.width = PLAIN_WIDTH

    def show(self, document: Any, render: Renderer) -> None:
        """`document` (what the API answered, or the command's own result) as one JSON
        document, or as the renderables `render` makes of it."""
        if self.output is Output.json:
            typer.echo(printable_json(document))
            return
        for renderable in render(document):
            self.console.print(renderable)
