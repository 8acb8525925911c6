"""The live displays of `--wait` and `--watch`, on stderr.

Rich falls back to plain text when the stream is not a terminal (no colour, no cursor
movement); these do more: off a terminal they print one line per change instead of redrawing,
so a CI log reads top to bottom.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.status import Status
from rich.text import Text

from cli.client import one_line
from cli.views import rollout_state
from tenancy.rollouts import FINAL_ROLLOUT_STATUSES


def progress_console() -> Console:
    """The console of live progress: stderr, whatever the output."""
    return Console(stderr=True, highlight=False)


class StatusLine:
    """One line of status that changes: a spinner on a terminal, otherwise a printed line per
    change. As a context manager, the last line stays printed on a terminal too."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._status: Status | None = None
        self._last: str | None = None

    def __enter__(self) -> StatusLine:
        if self._console.is_terminal:
            self._status = self._console.status("")
            self._status.start()
        return self

    def update(self, text: str) -> None:
        """Show `text` (nothing happens when it did not change)."""
        text = one_line(text)
        if text == self._last:
            return
        self._last = text
        if self._status is not None:
            self._status.update(Text(text))
        else:
            typer.echo(text, err=True)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()
            if self._last is not None:
                self._console.print(Text(self._last))


class WaveBars:
    """A progress bar per wave of a rollout on a terminal; otherwise a line per change of the
    rollout's status or of a wave's counts."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lines: dict[str, str] = {}

    def __enter__(self) -> WaveBars:
        if self._console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self._console,
            )
            self._progress.start()
        return self

    def update(self, rollout: dict[str, Any]) -> None:
        """Show where `rollout` (the API's document) stands; the line of its end comes last."""
        ended = rollout["status"] in FINAL_ROLLOUT_STATUSES
        if not ended:
            self._line("rollout", f"rollout {rollout['id']}: {rollout_state(rollout)}")
        for wave in rollout.get("waves", []):
            counts = wave["counts"]
            detail = (
                f"{counts['succeeded']} succeeded, {counts['failed']} failed, "
                f"{counts['skipped']} skipped"
            )
            finished = counts["succeeded"] + counts["failed"] + counts["skipped"]
            if self._progress is not None:
                description = f"{wave['name']} {wave['status']}"
                if wave["name"] not in self._tasks:
                    self._tasks[wave["name"]] = self._progress.add_task(
                        description, total=counts["total"], detail=detail
                    )
                self._progress.update(
                    self._tasks[wave["name"]],
                    description=description,
                    completed=finished,
                    total=counts["total"],
                    detail=detail,
                )
            else:
                self._line(
                    f"wave:{wave['name']}",
                    f"wave {wave['name']}: {wave['status']} {finished}/{counts['total']} "
                    f"({detail})",
                )
        if ended:
            self._line("rollout", f"rollout {rollout['id']}: {rollout_state(rollout)}")

    def _line(self, key: str, text: str) -> None:
        text = one_line(text)
        if self._lines.get(key) == text:
            return
        self._lines[key] = text
        if self._progress is not None:
            self._progress.console.print(Text(text))
        else:
            typer.echo(text, err=True)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
