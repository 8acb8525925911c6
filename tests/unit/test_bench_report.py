"""The benchmark's arithmetic and report, on hand-made samples (no stack)."""

from __future__ import annotations

import math
from pathlib import Path

from bench.load import LevelResult, Sample
from bench.report import DIRECT, EVENTS, TEMPORAL, Report, markdown, write
from bench.run import peak_in_flight


def _sample(n: int, latency: float, start: float = 1000.0) -> Sample:
    begin = start + n
    return Sample(
        f"t{n}",
        started=begin,
        accepted=begin + 0.01,
        status="ACTIVE",
        created=begin + 0.02,
        migrating=begin + 0.05,
        active=begin + latency,
    )


def test_percentiles_and_throughput_come_from_active_samples_only() -> None:
    samples = [_sample(i, (i + 1) / 100) for i in range(100)]  # 10 ms .. 1000 ms
    samples.append(Sample("refused", started=0.0, error="HTTP 409"))
    result = LevelResult(TEMPORAL, 4, samples, wall_seconds=10.0)

    assert len(result.ok) == 100
    assert result.throughput == 10.0
    assert math.isclose(result.percentile(50), 505, rel_tol=0.01)
    assert math.isclose(result.percentile(99), 990, rel_tol=0.01)


def test_step_medians_follow_the_timeline() -> None:
    result = LevelResult(TEMPORAL, 1, [_sample(i, 0.2) for i in range(5)], wall_seconds=1.0)

    steps = result.step_medians()

    assert math.isclose(steps["accept"], 10, abs_tol=0.01)
    assert math.isclose(steps["to_record"], 20, abs_tol=0.01)
    assert math.isclose(steps["storage"], 30, abs_tol=0.01)
    assert math.isclose(steps["migrations"], 150, abs_tol=0.01)


def test_no_active_sample_gives_nan_not_an_error() -> None:
    result = LevelResult(DIRECT, 1, [Sample("x", started=0.0, error="boom")], wall_seconds=1.0)
    assert math.isnan(result.percentile(50))
    assert result.throughput == 0.0


def test_peak_in_flight_counts_overlapping_tenants() -> None:
    # Three tenants overlap between t=1002.01 and t=1002.5; the fourth starts later.
    samples = [_sample(i, 2.5) for i in range(3)] + [_sample(10, 0.1)]
    assert peak_in_flight(samples) == 3


def test_report_shows_ratios_and_targets(tmp_path: Path) -> None:
    temporal = LevelResult(TEMPORAL, 1, [_sample(i, 0.3) for i in range(10)], 3.0)
    direct = LevelResult(DIRECT, 1, [_sample(i, 0.1) for i in range(10)], 1.0)
    report = Report("make bench", {"machine": "test"}, [temporal, direct])

    text = markdown(report)

    assert "| 1 | 10 | 3.3 | 10.0 | 300 / 300 / 300 | 100 / 100 / 100 | 3.0x | 3.0x |" in text
    assert "| p50 POST-to-ACTIVE, C=1 | <= 100 ms | 300 ms | no |" in text
    assert "| latency ratio Temporal/direct, C=1 | <= 3x | 3.0x | yes |" in text
    paths = write(report, tmp_path)
    assert {p.name for p in paths} == {"results.json", "results.md", "chart.png"}
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_puts_the_events_transport_beside_http() -> None:
    http = LevelResult(TEMPORAL, 8, [_sample(i, 0.2) for i in range(20)], 2.0)
    events = LevelResult(EVENTS, 8, [_sample(i, 0.4) for i in range(20)], 4.0)

    text = markdown(Report("make bench", {"machine": "test"}, [http, events]))
    alone = markdown(Report("make bench", {"machine": "test"}, [http]))

    assert "| 8 | 20 / 20 | 10.0 | 5.0 | 200 / 200 | 400 / 400 | 0.5x | 0 |" in text
    assert "| 8 | events |" in text, "the events path has its step medians too"
    assert "commands on the bus" not in alone
