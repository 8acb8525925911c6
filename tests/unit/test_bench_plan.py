"""The benchmark's stack runs beside `make dev`'s: no port of one is a port of the other; with
`--servers N` its tenants spread over N embedded servers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.run import parse
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
    assert plan.prometheus is None, "a scraper would load the machine the figures come from"


def test_the_benchmark_spreads_tenants_over_n_servers_in_one_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_")):
            monkeypatch.delenv(name)

    one = bench_plan(tmp_path, {})
    three = bench_plan(tmp_path, {}, servers=3)

    # One server: as before, no fleet configured (the installation's `default`).
    assert "PLATFORM_STORAGE_SERVERS" not in one.env
    assert [p.spec.port for p in one.postgres] == [54339]
    servers = json.loads(three.env["PLATFORM_STORAGE_SERVERS"])
    assert [(s["name"], s["pool"]) for s in servers] == [
        ("pg-1", "bench"),
        ("pg-2", "bench"),
        ("pg-3", "bench"),
    ]
    assert "PLATFORM_PLACEMENT" not in three.env  # every tier to the first server's pool
    ports = [p.spec.port for p in three.postgres]
    assert ports == [54339, 54340, 54341]
    assert [urlsplit(s["url"]).port for s in servers] == ports
    assert {p.spec.child for p in three.postgres} == {"postgres", "postgres-2", "postgres-3"}
    dev = DevSettings(data_dir=tmp_path / "dev")
    assert set(ports).isdisjoint({dev.postgres_port, dev.dedicated_postgres_port})


def test_the_servers_option_takes_counts_to_compare() -> None:
    options, *_ = parse(["--servers", "1,3", "--tenants", "5"])
    default, *_ = parse([])

    assert options.servers == (1, 3)
    assert default.servers == (1,)
    for bad in ("0", "1,x", ""):
        with pytest.raises(SystemExit):
            parse(["--servers", bad])
