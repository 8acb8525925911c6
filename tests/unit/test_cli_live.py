"""What `--wait` and `--watch` print off a terminal (cli.live): one plain line per change."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from cli.live import StatusLine, WaveBars
from cli.tenants import describe


def plain_console() -> Console:
    return Console(stderr=True, force_terminal=False)


def migrations(*records: tuple[str, str, str | None, int]) -> list[dict[str, Any]]:
    return [{"service": s, "status": st, "version": v, "attempts": n} for s, st, v, n in records]


def test_the_status_line_names_each_service_and_the_attempts_of_those_not_done() -> None:
    tenant = {
        "id": "acme",
        "status": "MIGRATING",
        "statusReason": None,
        "migrations": migrations(("auth", "RUNNING", None, 3), ("backend", "SUCCEEDED", "b2", 1)),
    }
    assert describe(tenant) == "acme: MIGRATING - auth RUNNING [attempts 3], backend SUCCEEDED b2"
    failed = tenant | {"status": "MIGRATION_ERROR", "statusReason": "migration failed for: auth"}
    assert describe(failed).startswith("acme: MIGRATION_ERROR (migration failed for: auth) - ")


def test_off_a_terminal_each_change_is_one_line_and_repeats_print_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with StatusLine(plain_console()) as line:
        for text in ("acme: PROVISIONING", "acme: PROVISIONING", "acme: ACTIVE", "acme: ACTIVE"):
            line.update(text)
        line.update("evil\x1b[2J\r")
    err = capsys.readouterr().err
    assert err == "acme: PROVISIONING\nacme: ACTIVE\nevil\\x1b[2J\\r\n"


def rollout(status: str, *waves: tuple[str, str, int, int]) -> dict[str, Any]:
    return {
        "id": "r1",
        "status": status,
        "statusReason": None,
        "waves": [
            {
                "name": name,
                "status": wave_status,
                "counts": {"total": total, "succeeded": done, "failed": 0, "skipped": 0},
            }
            for name, wave_status, total, done in waves
        ],
    }


def test_off_a_terminal_a_rollout_prints_wave_changes_and_its_end_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with WaveBars(plain_console()) as bars:
        bars.update(rollout("RUNNING", ("canary", "RUNNING", 1, 0), ("rest", "PENDING", 2, 0)))
        bars.update(rollout("RUNNING", ("canary", "RUNNING", 1, 0), ("rest", "PENDING", 2, 0)))
        bars.update(
            rollout("SUCCEEDED", ("canary", "SUCCEEDED", 1, 1), ("rest", "SUCCEEDED", 2, 2))
        )
    assert capsys.readouterr().err.splitlines() == [
        "rollout r1: RUNNING",
        "wave canary: RUNNING 0/1 (0 succeeded, 0 failed, 0 skipped)",
        "wave rest: PENDING 0/2 (0 succeeded, 0 failed, 0 skipped)",
        "wave canary: SUCCEEDED 1/1 (1 succeeded, 0 failed, 0 skipped)",
        "wave rest: SUCCEEDED 2/2 (2 succeeded, 0 failed, 0 skipped)",
        "rollout r1: SUCCEEDED",
    ]
