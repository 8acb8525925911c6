"""The generated files, where each goes under the docs folder, and the write and check passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from docgen import cli, events, metrics, rest, settings, status_machine

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"


@dataclass(frozen=True)
class Generated:
    """One generated file: its path under the docs folder and what renders it."""

    path: str
    render: Callable[[], str]


GENERATED: tuple[Generated, ...] = (
    Generated(settings.PATH, settings.render),
    Generated(cli.PATH, cli.render),
    Generated(metrics.PATH, metrics.render),
    Generated(rest.PATH, rest.render),
    Generated(rest.OPENAPI_PATH, rest.openapi_json),
    Generated(events.PATH, events.render),
    Generated(status_machine.PATH, status_machine.render),
)


def stale(docs_dir: Path = DOCS_DIR, generated: Sequence[Generated] = GENERATED) -> list[str]:
    """The files under `docs_dir` that are missing or differ from what the code renders now."""
    found = []
    for item in generated:
        target = docs_dir / item.path
        if not target.is_file() or target.read_text(encoding="utf-8") != item.render():
            found.append(item.path)
    return found


def write(docs_dir: Path = DOCS_DIR, generated: Sequence[Generated] = GENERATED) -> list[str]:
    """Write every stale file under `docs_dir`; the paths written (fresh ones are left as they
    are, so their modification times do not change)."""
    written = []
    for item in generated:
        target = docs_dir / item.path
        text = item.render()
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(item.path)
    return written
