"""The benchmark's arithmetic and report, on hand-made samples (no stack)."""

from __future__ import annotations

import math
from pathlib import Path

from bench.load import LevelResult, Sample
from bench.report import DIRECT, EVENTS, TEMPORAL, Report, markdown, servers_path, write
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
    assert "| latency ratio Temporal/direct, C=1 (issue 5) | <= 3x | 3.0x | yes |" in text
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


def _level(
    path: str,
    c: int,
    per_second: float,
    cpu_seconds: dict[str, float] | None = None,
    accept: float = 0.01,
) -> LevelResult:
    """Ten ACTIVE tenants at `per_second` tenants/s, each POST answered after `accept` s."""
    samples = [_sample(i, 0.2) for i in range(10)]
    for s in samples:
        s.accepted = s.started + accept
    return LevelResult(path, c, samples, 10 / per_second, cpu_seconds=cpu_seconds or {})


def _targets(levels: list[LevelResult]) -> list[str]:
    text = markdown(Report("make bench", {"machine": "test"}, levels))
    return [line for line in text.split("Targets")[1].splitlines() if line.startswith("| ")]


def test_targets_compare_cpu_per_tenant_per_level() -> None:
    rows = _targets(
        [
            _level(TEMPORAL, 1, 5.0, {"temporal": 0.5, "worker": 0.54}),  # 104 ms a tenant
            _level(DIRECT, 1, 10.0, {"bench": 0.5, "postgres": 0.11}),  # 61 ms
            _level(TEMPORAL, 8, 5.0, {"temporal": 2.5}),  # 250 ms
            _level(DIRECT, 8, 10.0, {"bench": 1.0}),  # 100 ms
            _level(TEMPORAL, 32, 5.0, {"temporal": 2.5}),  # no direct figures at C=32
            _level(DIRECT, 32, 10.0),
        ]
    )

    assert "| CPU per tenant Temporal/direct, C=1 | <= 2x | 1.7x (104 / 61 ms) | yes |" in rows
    assert "| CPU per tenant Temporal/direct, C=8 | <= 2x | 2.5x (250 / 100 ms) | no |" in rows
    assert not any("CPU per tenant Temporal/direct, C=32" in row for row in rows)


def test_targets_cpu_not_measured_without_figures() -> None:
    rows = _targets([_level(TEMPORAL, 1, 5.0), _level(DIRECT, 1, 10.0)])

    assert "| CPU per tenant, all processes, Temporal/direct | <= 2x | not measured | - |" in rows


def test_targets_throughput_share_at_c8() -> None:
    below = _targets([_level(TEMPORAL, 8, 5.0), _level(DIRECT, 8, 10.0)])
    above = _targets([_level(TEMPORAL, 8, 6.5), _level(DIRECT, 8, 10.0)])
    alone = _targets([_level(TEMPORAL, 8, 6.5), _level(DIRECT, 1, 10.0)])

    assert "| throughput Temporal/direct, C=8 | >= 60% | 50% (5.0 / 10.0 tenants/s) | no |" in below
    assert (
        "| throughput Temporal/direct, C=8 | >= 60% | 65% (6.5 / 10.0 tenants/s) | yes |" in above
    )
    assert "| throughput Temporal/direct, C=8 | >= 60% | not measured | - |" in alone


def test_targets_throughput_does_not_fall_past_c8() -> None:
    rows = _targets([_level(TEMPORAL, 8, 5.0), _level(TEMPORAL, 32, 6.7)])
    fell = _targets([_level(TEMPORAL, 8, 5.0), _level(TEMPORAL, 128, 4.0)])

    assert (
        "| throughput does not fall: C=32 >= C=8 | >= C=8's | 6.7 / 5.0 tenants/s | yes |" in rows
    )
    assert "| throughput does not fall: C=128 >= C=8 | >= C=8's | not measured | - |" in rows
    assert (
        "| throughput does not fall: C=128 >= C=8 | >= C=8's | 4.0 / 5.0 tenants/s | no |" in fell
    )
    assert "| throughput does not fall: C=32 >= C=8 | >= C=8's | not measured | - |" in fell


def test_targets_post_answered_p50_at_c32() -> None:
    fast = _targets([_level(TEMPORAL, 32, 5.0, accept=0.012), _level(DIRECT, 32, 10.0)])
    slow = _targets([_level(TEMPORAL, 32, 5.0, accept=0.278)])
    missing = _targets([_level(TEMPORAL, 8, 5.0)])

    assert "| POST answered (202) p50, C=32 | <= 50 ms | 12 ms | yes |" in fast
    assert "| POST answered (202) p50, C=32 | <= 50 ms | 278 ms | no |" in slow
    assert "| POST answered (202) p50, C=32 | <= 50 ms | not measured | - |" in missing


def test_targets_issue_20_first_then_the_older_ones() -> None:
    rows = _targets([_level(TEMPORAL, 1, 5.0), _level(DIRECT, 1, 10.0)])
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]

    assert names == [
        "CPU per tenant, all processes, Temporal/direct",
        "p50 POST-to-ACTIVE, C=1",
        "throughput Temporal/direct, C=8",
        "throughput does not fall: C=32 >= C=8",
        "throughput does not fall: C=128 >= C=8",
        "POST answered (202) p50, C=32",
        "throughput, C=32 (issue 5)",
        "latency ratio Temporal/direct, C=1 (issue 5)",
        "worker RSS, 1,000 tenants in flight (issue 5; goal: 1,000)",
    ]


def test_targets_with_one_path_missing_do_not_crash() -> None:
    only_direct = _targets([_level(DIRECT, 8, 10.0, {"bench": 1.0})])
    only_temporal = _targets([_level(TEMPORAL, 8, 5.0, {"temporal": 1.0})])

    for rows in (only_direct, only_temporal):
        assert "| throughput Temporal/direct, C=8 | >= 60% | not measured | - |" in rows
        assert (
            "| CPU per tenant, all processes, Temporal/direct | <= 2x | not measured | - |" in rows
        )


def test_report_compares_the_cost_per_tenant_over_one_and_over_three_servers() -> None:
    levels = [
        _level(TEMPORAL, 1, 5.0, {"worker": 0.5, "postgres": 0.5}),  # 100 ms a tenant
        _level(servers_path(3), 1, 5.0, {"worker": 0.5, "postgres": 0.3, "postgres-2": 0.25}),
        _level(TEMPORAL, 8, 5.0, {"worker": 1.0}),  # 100 ms
        _level(servers_path(3), 8, 5.0, {"worker": 1.2, "postgres-3": 0.3}),  # 150 ms
    ]

    text = markdown(Report("make bench", {"machine": "test"}, levels, servers=(1, 3)))
    alone = markdown(Report("make bench", {"machine": "test"}, levels[:1]))

    assert "| 1 | 1 | 10 | 5.0 | 200 / 200 | 100 | 50 | 0 |" in text
    assert "| 1 | 3 | 10 | 5.0 | 200 / 200 | 105 | 55 | 0 |" in text
    assert (
        "| CPU per tenant over 3 servers / over 1, C=1 | <= 1.1x | 1.05x (105 / 100 ms) | yes |"
        in (text)
    )
    assert (
        "| CPU per tenant over 3 servers / over 1, C=8 | <= 1.1x | 1.50x (150 / 100 ms) | no |"
        in (text)
    )
    # Every server's PostgreSQL counts in the postgres column.
    assert "| 1 | servers3 | 0 | 55 | 50 | 0 | 0 | 0 | 0 | 105 |" in text
    assert "storage servers" not in alone
