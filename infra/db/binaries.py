"""Where PostgreSQL's programs are: the `pgserver` wheel's, so a machine with only Python has them,
else the machine's own."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def _wheel_bin_dir() -> Path | None:
    # Located without importing pgserver: its import creates lock files and warns.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return candidate if (candidate / "postgres").exists() else None


def pg_binaries_dir() -> Path:
    """Folder holding `initdb` and `postgres`: the pgserver wheel's, else the machine's."""
    wheel = _wheel_bin_dir()
    if wheel is not None:
        return wheel
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("no PostgreSQL binaries: install the pgserver wheel")
    return Path(found).resolve().parent


def pg_program(name: str) -> Path:
    """One PostgreSQL program (`pg_dump`, `pg_restore`, ...): the pgserver wheel's, else the
    first on PATH. Raises `FileNotFoundError` when neither has it."""
    wheel = _wheel_bin_dir()
    if wheel is not None and (wheel / name).exists():
        return wheel / name
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name}: install the pgserver wheel or PostgreSQL's client")
    # Not resolved: Debian's /usr/bin/pg_dump is a wrapper that picks the version by its name.
    return Path(found)
