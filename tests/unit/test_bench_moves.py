"""The moves benchmark's arithmetic and report, on hand-made answers (no stack)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.moves import (
    Answer,
    Freeze,
    MoveResult,
    count_writes,
    freeze_window,
    goal,
    parse,
    phase_spans,
    report_lines,
    write_report,
)


def _answers(*pairs: tuple[float, int]) -> list[Answer]:
    """(answered at, status) -> answers sent 0.1 s before, each with its own text."""
    return [Answer(t - 0.1, t, status, f"note-{n}") for n, (t, status) in enumerate(pairs)]


def test_the_freeze_is_the_longest_refused_run_from_its_first_refusal_to_the_next_accepted() -> (
    None
):
    answers = _answers(
        (1.0, 201),
        (1.2, 503),  # a short run: 0.3 s
        (1.5, 201),
        (2.0, 503),  # the long one: 2.0 -> 4.5
        (2.5, 0),  # no answer at all counts as refused
        (3.0, 503),
        (4.5, 201),
        (5.0, 201),
    )

    freeze = freeze_window(answers)

    assert freeze == Freeze(seconds=2.5, start=2.0, end=4.5, refused=3)
    assert freeze.closed


def test_answers_are_taken_in_the_order_they_came_back_not_sent() -> None:
    # The refused write was sent first but answered after an accepted one sent later.
    answers = [
        Answer(sent=1.0, answered=3.0, status=503, text="slow"),
        Answer(sent=2.0, answered=2.1, status=201, text="fast"),
        Answer(sent=2.5, answered=3.4, status=201, text="next"),
    ]

    freeze = freeze_window(answers)

    assert math.isclose(freeze.seconds, 0.4)
    assert (freeze.start, freeze.end, freeze.refused) == (3.0, 3.4, 1)


def test_no_refusal_is_no_freeze_and_a_run_never_closed_is_open() -> None:
    assert freeze_window(_answers((1.0, 201), (2.0, 201))) == Freeze(0.0, None, None, 0)
    assert freeze_window([]) == Freeze(0.0, None, None, 0)

    still_refused = freeze_window(_answers((1.0, 201), (2.0, 503), (3.5, 503)))

    assert still_refused == Freeze(seconds=1.5, start=2.0, end=None, refused=2)
    assert not still_refused.closed


def test_writes_lost_are_the_accepted_ones_not_found_afterwards() -> None:
    answers = _answers((1.0, 201), (1.1, 201), (1.2, 503), (1.3, 0), (1.4, 201))
    # note-1 (accepted) is missing; note-3 (no answer) was stored all the same.
    found = {"note-0", "note-3", "note-4", "written-before"}

    writes = count_writes(answers, found)

    assert (writes.attempted, writes.accepted, writes.refused) == (5, 3, 2)
    assert (writes.found, writes.lost, writes.refused_stored) == (2, 1, 1)
    assert writes.statuses == {"0": 1, "201": 3, "503": 1}


def test_phase_spans_from_the_row_and_events_missing_ones_are_none() -> None:
    phases = {"PREPARING": 10.0, "FROZEN": 10.5, "COPYING": 10.7, "SWITCHED": 12.0}

    spans = phase_spans(requested=10.0, phases=phases, moved=12.25)

    assert spans["preparing"] == pytest.approx(0.5)
    assert spans["freezing"] == pytest.approx(0.2)
    # VERIFYING was not seen: copying and verifying cannot be told apart.
    assert spans["copying"] is None
    assert spans["verifying"] is None
    assert spans["switching"] == pytest.approx(0.25)
    assert spans["frozenToSwitch"] == pytest.approx(1.75)
    assert phase_spans(None, {}, None) == dict.fromkeys(spans)


def _result(size: float, freeze: float, *, lost: int = 0) -> MoveResult:
    answers = _answers((1.0, 201), (2.0, 503), (2.0 + freeze, 201))
    found = {a.text for a in answers if a.ok}
    if lost:
        found.discard("note-0")
    return MoveResult(
        size_mb=size,
        tenant_id=f"mv_{int(size)}",
        from_server="pg-1",
        to_server="pg-2",
        bytes_before=int(size * 1024 * 1024),
        bytes_after=int(size * 1024 * 1024) + 8192,
        outcome="ACTIVE on pg-2",
        total_seconds=3.0 + size / 10,
        freeze=freeze_window(answers),
        spans=phase_spans(0.0, {"FROZEN": 0.5}, 0.5 + freeze * 0.8),
        writes=count_writes(answers, found),
        cpu_seconds={"api": 0.5, "worker": 1.0, "postgres": 1.5},
        load=1.25,
    )


def test_the_goal_is_the_freeze_at_10_mb() -> None:
    assert goal([_result(1, 0.5), _result(10, 1.9)]) == {
        "target": "freeze (service) <= 2 s at 10 MB",
        "reached": 1.9,
        "met": True,
    }
    assert goal([_result(10, 2.4)]) == {
        "target": "freeze (service) <= 2 s at 10 MB",
        "reached": 2.4,
        "met": False,
    }
    lost = goal([_result(10, 1.0, lost=1)])
    assert lost is not None
    assert lost["met"] is False
    assert goal([_result(1, 0.5)]) is None


def test_report_has_a_row_per_size_the_goal_and_a_place_for_the_drain(tmp_path: Path) -> None:
    results = [_result(1, 0.5), _result(10, 1.9, lost=1)]

    lines = report_lines("python -m bench moves --sizes 1,10", {"machine": "2 cores"}, results)
    text = "\n".join(lines)

    row = next(line for line in lines if line.startswith("| 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["10", "10.0", "4.0", "1.90", "1.52", "2 / 1 / 1"]
    assert "CPU s (total)" in text
    assert "3.0" in cells  # api 0.5 + worker 1.0 + postgres 1.5
    assert "## 1 MB" in text
    assert "## 10 MB" in text
    assert "| freeze (service) <= 2 s at 10 MB | 1.9 | not met |" in text
    assert "## Drain" in text

    paths = write_report(tmp_path, "cmd", {"machine": "2 cores"}, results)

    data = json.loads((tmp_path / "results.json").read_text())
    assert [p.name for p in paths] == ["results.json", "results.md"]
    assert data["moves"][1]["writes"]["lost"] == 1
    assert data["moves"][1]["freezeSeconds"] == 1.9
    assert data["moves"][0]["spans"]["frozenToSwitch"] == 0.4
    assert data["drain"] is None
    assert data["goal"]["met"] is False


def test_sizes_and_rate_from_the_command_line() -> None:
    options = parse(["--sizes", "1,10,100", "--rate", "25"])

    assert options.sizes == (1.0, 10.0, 100.0)
    assert options.rate == 25.0
    assert parse([]).sizes == (1.0, 10.0, 100.0)
    for bad in (["--sizes", "0"], ["--sizes", "1,x"], ["--rate", "0"]):
        with pytest.raises(SystemExit):
            parse(bad)
