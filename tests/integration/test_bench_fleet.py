"""`python -m bench fleet` end to end, small: the real stack, four rollouts per fleet size, the
report files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_fleet_rolls_out_on_both_paths_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    work = tmp_path / "stack"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "fleet",
            "--tenants",
            "6",
            "--scale-factor",
            "2",
            "--provision-concurrency",
            "6",
            "--out",
            str(out),
            "--work-dir",
            str(work),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    data = json.loads((out / "results.json").read_text())
    rollouts = {(r["fleet"], r["path"], r["kind"]): r for r in data["rollouts"]}
    assert set(rollouts) == {
        (fleet, path, kind)
        for fleet in (6, 12)
        for path in ("temporal", "direct")
        for kind in ("no-op", "apply")
    }
    for (fleet, _, _), rollout in rollouts.items():
        # Every tenant of the fleet, each a success, with CPU figures for the processes.
        assert rollout["status"] == "SUCCEEDED"
        assert rollout["succeeded"] == rollout["total"] == fleet
        assert rollout["tenantsPerSecond"] > 0
        assert rollout["batches"] >= 1
        # CPU is read in clock ticks (10 ms): a few tenants may show none in one process.
        assert sum(rollout["cpuMsPerTenant"].values()) > 0
        assert {"postgres", "worker", "temporal", "backend-service", "bench"} <= set(
            rollout["cpuMsPerTenant"]
        )
    assert rollouts[(6, "temporal", "no-op")]["peakRssMiB"]["worker"] > 0
    # Four new backend-service migrations were shipped, one per apply rollout.
    shipped = sorted(p.name for p in (work / "migrations" / "backend-service").glob("*.sql"))
    assert shipped == [f"backend_{n:04d}_bench_{n}.sql" for n in (3, 4, 5, 6)]
    assert [t["target"].split(" ")[0] for t in data["targets"]][:2] == ["no-op", "apply"]
    text = (out / "results.md").read_text()
    assert "## 6 tenants" in text
    assert "## 12 tenants" in text
    assert "## Targets (Temporal path)" in text
    # The stack is gone.
    assert not list((work / "run").glob("*.pid"))
