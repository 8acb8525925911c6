"""`python -m bench drain`: a storage server drained of N small tenants onto two others.

    python -m bench drain                                # 200 tenants, concurrency 4
    python -m bench drain --tenants 200 --concurrency 8 --out bench/results/drain

It starts the stack `make bench` measures (bench/stack.py) over three storage servers `pg-1`,
`pg-2` and `pg-3` (one pool), cordons `pg-2` and `pg-3` so that provisioning places every
tenant on `pg-1`, provisions `--tenants` SCHEMA tenants (STANDARD, empty but for what the
reference services' migrations make) through the API and waits until they are all ACTIVE,
uncordons the two, then `POST /api/storage-servers/pg-1/drain` and polls the server until its
drain has ended. Figures: the drain's time (the POST to the end of its run, as the server's
`drain.endedAt` says), tenants moved per minute, tenants moved and failed, where they went,
and the CPU seconds of each process over the drain (per tenant moved too). Results go to
`--out` (results.json, results.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from bench.load import CpuMeter
from bench.stack import running_stack
from devstack.dev import REPO_ROOT
from devstack.tokens import mint

_log = logging.getLogger("bench")
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "drain"
WORK_DIR = REPO_ROOT / ".benchdata"
SOURCE, TARGETS = "pg-1", ("pg-2", "pg-3")
ACTIVE_WAIT = 600.0
DRAIN_WAIT = 1800.0


@dataclass
class DrainResult:
    """One drain measured."""

    tenants: int
    concurrency: int
    seconds: float
    moved: int
    failed: int
    state: str
    tenants_after: dict[str, int]
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def per_minute(self) -> float:
        """Tenants moved per minute of the drain."""
        return 60 * self.moved / self.seconds if self.seconds else 0.0


def provision_all(http: httpx.Client, count: int) -> list[str]:
    """`count` SCHEMA tenants, once every one of them is ACTIVE."""
    run = os.urandom(2).hex()
    ids = [f"drn{run}_{n}" for n in range(count)]
    for tenant_id in ids:
        body = {"id": tenant_id, "name": tenant_id, "storageMode": "SCHEMA", "slaTier": "STANDARD"}
        http.post("/api/tenants", json=body).raise_for_status()
    deadline = time.monotonic() + ACTIVE_WAIT
    waiting = set(ids)
    while waiting:
        for tenant_id in sorted(waiting):
            if http.get(f"/api/tenants/{tenant_id}").json()["status"] == "ACTIVE":
                waiting.discard(tenant_id)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} tenants not ACTIVE after {ACTIVE_WAIT:.0f} s")
        time.sleep(0.5)
    return ids


def tenants_per_server(http: httpx.Client) -> dict[str, int]:
    """Every server's tenant count, as the API lists them."""
    servers = http.get("/api/storage-servers").json()["items"]
    return {s["name"]: int(s["tenants"]) for s in servers}


def measure(tenants: int, concurrency: int, work_dir: Path) -> DrainResult:
    """Start the stack, fill pg-1, drain it, and time it."""
    with running_stack(work_dir, servers=3) as stack:
        token = mint(
            stack.plan.dev.idp_key_file,
            subject="bench-drain",
            scopes=[READ_SCOPE, WRITE_SCOPE, SERVERS_WRITE_SCOPE],
            audience=stack.plan.audience,
            ttl=timedelta(hours=2),
        )
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(
            base_url=stack.api_url, headers=auth, timeout=60, trust_env=False
        ) as http:
            for name in TARGETS:
                http.post(
                    f"/api/storage-servers/{name}/cordon", json={"reason": "bench: fill pg-1"}
                ).raise_for_status()
            started = time.monotonic()
            provision_all(http, tenants)
            _log.info("%d tenants ACTIVE in %.0f s", tenants, time.monotonic() - started)
            for name in TARGETS:
                http.post(f"/api/storage-servers/{name}/uncordon").raise_for_status()
            meter = CpuMeter(stack.pids)
            before = meter.read()
            began = time.monotonic()
            http.post(
                f"/api/storage-servers/{SOURCE}/drain",
                json={"concurrency": concurrency, "reason": "bench"},
            ).raise_for_status()
            while True:
                server = http.get(f"/api/storage-servers/{SOURCE}").json()
                drain = server.get("drain") or {}
                if drain.get("endedAt") is not None:
                    break
                if time.monotonic() - began > DRAIN_WAIT:
                    raise RuntimeError(f"the drain did not end in {DRAIN_WAIT:.0f} s: {drain}")
                time.sleep(0.2)
            seconds = time.monotonic() - began
            used = CpuMeter.used(before, meter.read())
            after = tenants_per_server(http)
    return DrainResult(
        tenants=tenants,
        concurrency=concurrency,
        seconds=round(seconds, 1),
        moved=int(drain["moved"]),
        failed=int(drain["failed"]),
        state=str(server["state"]),
        tenants_after=after,
        cpu_seconds={name: round(s, 2) for name, s in sorted(used.items())},
    )


def report_lines(command: str, info: dict[str, str], result: DrainResult) -> list[str]:
    """results.md."""
    lines = ["# Server drain", "", f"`{command}`", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    per = {n: s / result.moved if result.moved else 0.0 for n, s in result.cpu_seconds.items()}
    lines += [
        "",
        "| tenants | concurrency | seconds | tenants/minute | moved | failed | state | after |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {result.tenants} | {result.concurrency} | {result.seconds} | "
        f"{result.per_minute:,.0f} | {result.moved} | {result.failed} | {result.state} | "
        + ", ".join(f"{k}: {v}" for k, v in result.tenants_after.items())
        + " |",
        "",
        "CPU seconds over the drain, per process (and per tenant moved, ms):",
        "",
        "| " + " | ".join(result.cpu_seconds) + " |",
        "|" + "---:|" * len(result.cpu_seconds),
        "| "
        + " | ".join(f"{s} ({1000 * per[n]:.0f})" for n, s in result.cpu_seconds.items())
        + " |",
    ]
    return lines


def main(argv: Sequence[str]) -> int:
    """Measure one drain and write the report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench drain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenants", type=int, default=200, help="tenants on the drained server")
    parser.add_argument("--concurrency", type=int, default=4, help="the drain's moves at once")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help="the stack's data")
    args = parser.parse_args(argv)
    if args.tenants < 1 or not 1 <= args.concurrency <= 32:
        parser.error("--tenants must be positive and --concurrency 1 to 32")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = measure(args.tenants, args.concurrency, args.work_dir)
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "fleet": f"{SOURCE} drained onto {', '.join(TARGETS)} (one pool)",
    }
    lines = report_lines("python -m bench drain " + " ".join(argv), info, result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    payload: dict[str, Any] = {"context": info, "result": asdict(result)}
    payload["result"]["per_minute"] = round(result.per_minute, 1)
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if result.state == "DRAINED" and result.failed == 0 else 1
