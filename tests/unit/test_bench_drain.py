"""The drain benchmark's arithmetic and report (bench/drain.py)."""

from __future__ import annotations

from bench.drain import DrainResult, report_lines


def result(**overrides: object) -> DrainResult:
    values: dict[str, object] = {
        "tenants": 200,
        "concurrency": 4,
        "seconds": 120.0,
        "moved": 200,
        "failed": 0,
        "state": "DRAINED",
        "tenants_after": {"pg-1": 0, "pg-2": 100, "pg-3": 100},
        "cpu_seconds": {"api": 2.0, "worker": 30.0},
    }
    values.update(overrides)
    return DrainResult(**values)  # type: ignore[arg-type]


def test_tenants_per_minute_count_the_moved_ones_over_the_drain_s_time() -> None:
    assert result().per_minute == 100
    assert result(moved=150, failed=50).per_minute == 75
    assert result(seconds=0.0).per_minute == 0


def test_the_report_shows_the_rate_where_tenants_went_and_cpu_per_tenant() -> None:
    lines = report_lines("python -m bench drain", {"date": "today"}, result())
    text = "\n".join(lines)
    assert "| 200 | 4 | 120.0 | 100 | 200 | 0 | DRAINED | pg-1: 0, pg-2: 100, pg-3: 100 |" in text
    # 30 s of the worker's CPU over 200 tenants: 150 ms each.
    assert "| 2.0 (10) | 30.0 (150) |" in text
