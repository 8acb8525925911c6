"""The benchmark's stack runs beside `make dev`'s: no port of one is a port of the other."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stack import BENCH_API_PORT, bench_plan
from devstack.dev import DevSettings

PORT_FIELDS = [name for name in DevSettings.model_fields if name.endswith("_port")]


def test_every_port_of_the_benchmark_differs_from_make_devs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PLATFORM_EVENTS_URL", "PLATFORM_DATABASE_URL", "TEMPORAL_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    plan = bench_plan(tmp_path, {})
    dev = DevSettings(data_dir=tmp_path / "dev")
    assert "nats_port" in PORT_FIELDS
    bench_ports = {getattr(plan.dev, name) for name in PORT_FIELDS} | {BENCH_API_PORT}
    dev_ports = {getattr(dev, name) for name in PORT_FIELDS} | {8000}
    assert bench_ports.isdisjoint(dev_ports), bench_ports & dev_ports
    assert plan.env["PLATFORM_EVENTS_URL"] == f"nats://127.0.0.1:{plan.dev.nats_port}"
