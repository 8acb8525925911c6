"""How `make test` shares the suite among pytest-xdist workers, as a pytest plugin.

Each worker starts its own session servers (PostgreSQL, Temporal, NATS on free ports, data under
its own basetemp) and every test has its own task queue and tenant ids, so workers never see
each other's work. What a worker runs is a *unit*, run in file order:

- a test module: its tests share module fixtures and, in places, what an earlier test left
  (test_reconciliation's drift, test_fuzz_api's ACCEPTED), exactly as in a serial run;
- a group of `GROUPS` below: modules that must never run at the same time as each other, or
  must share one session.

This plugin's scheduler applies them under `-n` (`--dist load`, the default, or `loadgroup`).
A new group goes into `GROUPS`, not into an `xdist_group` mark: xdist's `--dist loadgroup`
reads those marks, but with pytest 9.2 it silently stops grouping (pytest-dev/pytest-xdist#1386:
the node id it rewrites is no longer read).
"""

from __future__ import annotations

from typing import Any

import pytest

# Rootdir-relative paths (a folder ends with "/") and the one worker unit they form.
GROUPS: dict[str, str] = {
    # Whole stacks as subprocesses: `python -m bench` binds the benchmark's fixed ports
    # (bench/stack.py), so its two runs must never overlap; `make dev`'s end-to-end run starts
    # the same stack (on free ports) and waits with deadlines, so it runs beside them.
    "tests/integration/test_bench.py": "whole-stack",
    "tests/integration/test_bench_fleet.py": "whole-stack",
    "tests/integration/test_make_dev.py": "whole-stack",
    # The fault suite's ledger (tests/faults/conftest.py) is a session fixture: its figures
    # and closing invariants cover every fault test only when they share one session.
    "tests/faults/": "faults",
}


def unit_of(nodeid: str) -> str:
    """The worker unit of a test: its group, else its module."""
    path = nodeid.split("::", 1)[0]
    for prefix, group in GROUPS.items():
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return f"group:{group}"
    return path


class _Scheduling:
    """Registers the scheduler when xdist is there (a serial run never imports it)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") not in ("load", "loadgroup"):
            return None
        from xdist.scheduler import LoadScopeScheduling

        class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
            """xdist's scope scheduling with this suite's units as the scopes."""

            def _split_scope(self, nodeid: str) -> str:
                return unit_of(nodeid)

        # Collection order, not largest unit first: the slow units (the fault suite, the
        # whole stacks) then start early instead of ending the run alone.
        config.option.loadscopereorder = False
        return UnitScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Scheduling(), "platform-test-units")
