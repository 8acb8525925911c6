"""`make bench` end to end, small: the real stack, both paths, both transports, the report
files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_provisions_on_both_paths_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tenants",
            "3",
            "--concurrency",
            "1,2",
            "--warmup",
            "1",
            "--scale",
            "6",
            "--transport",
            "http,events",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "stack"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    data = json.loads((out / "results.json").read_text())
    levels = {(level["path"], level["concurrency"]): level for level in data["levels"]}
    assert set(levels) == {
        ("temporal", 1),
        ("direct", 1),
        ("temporal", 2),
        ("direct", 2),
        # The reference services called by command on the bus, in a second stack.
        ("events", 1),
        ("events", 2),
    }
    for level in levels.values():
        # max(N, 2C) tenants, all ACTIVE, with a latency and CPU figures for every process.
        assert level["active"] == level["tenants"] == max(3, 2 * level["concurrency"])
        assert 0 < level["p50Ms"] <= level["p99Ms"]
        assert level["cpuMsPerTenant"]["postgres"] > 0
    assert levels[("temporal", 1)]["peakRssMiB"]["worker"] > 0
    assert levels[("temporal", 1)]["cpuMsPerTenant"]["temporal"] > 0
    scale = data["scale"]
    assert scale["tenants"] == 6
    assert scale["failures"] == 0
    assert [point["existing"] for point in scale["points"]] == [6]
    text = (out / "results.md").read_text()
    assert "latency ratio Temporal/direct, C=1" in text
    assert "commands on the bus with signed replies" in text
    assert (out / "chart.png").stat().st_size > 10_000
    # The stack is gone: nothing listens on the benchmark's API port any more.
    assert not list((tmp_path / "stack" / "run").glob("*.pid"))
