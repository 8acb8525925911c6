"""`python -m bench directory`: how fast the API answers the reads other services make.

    python -m bench directory                          # 16 clients, 10 s per read
    python -m bench directory --api-workers 1,2        # the stack again per PLATFORM_API_WORKERS
    python -m bench directory --duration 20 --clients 32

It starts the stack `make bench` measures (bench/stack.py), provisions a few tenants through
the API and waits until they are ACTIVE, then, for each read in turn, keeps `--clients`
keep-alive connections busy for `--duration` seconds, from `wrk` (bench/wrkload.py) when it is
on the PATH, else from Python clients in two processes (bench/rawload.py), on the same machine
(`--load` chooses):

    full        GET /api/tenants/{id}                         200
    304         GET /api/tenants/{id} with If-None-Match      304 (needs the answer's ETag)
    location    GET /api/tenants/{id}/location                200

A read the API does not serve (no ETag to send back, a 404 route) is skipped with a line
saying so. Requests/s, p50 and p99 go to `--out` (results.json, results.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from api.auth import DELETE_SCOPE, DIRECTORY_SCOPE, READ_SCOPE, WRITE_SCOPE
from bench import event_to_cache, rawload, wrkload
from bench.event_to_cache import EventToCache
from bench.load import CpuMeter
from bench.stack import RunningStack, running_stack
from devstack.dev import REPO_ROOT
from devstack.tokens import mint

_log = logging.getLogger("bench")
Outcome = rawload.Outcome | wrkload.WrkOutcome
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "directory"
WORK_DIR = REPO_ROOT / ".benchdata"
ACTIVE_WAIT = 120.0


@dataclass(frozen=True)
class ReadResult:
    """One read measured at one worker count."""

    read: str
    api_workers: int
    clients: int
    seconds: float
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    # CPU the API's processes spent per answer: steadier than requests/s on a shared machine.
    api_cpu_ms: float
    statuses: dict[str, int]
    errors: int


@dataclass(frozen=True)
class Skipped:
    """A read the API did not serve, and why."""

    read: str
    api_workers: int
    reason: str


def provision(http: httpx.Client, token: str, count: int) -> list[str]:
    """`count` fresh tenants, once every one of them is ACTIVE."""
    run = os.urandom(2).hex()
    ids = [f"dir{run}_{n}" for n in range(count)]
    auth = {"Authorization": f"Bearer {token}"}
    for tenant_id in ids:
        body = {
            "id": tenant_id,
            "name": f"Directory {tenant_id}",
            "storageMode": "SCHEMA",
            "slaTier": "STANDARD",
        }
        http.post("/api/tenants", json=body, headers=auth).raise_for_status()
    deadline = time.monotonic() + ACTIVE_WAIT
    waiting = set(ids)
    while waiting:
        for tenant_id in sorted(waiting):
            answer = http.get(f"/api/tenants/{tenant_id}", headers=auth)
            if answer.status_code == 200 and answer.json()["status"] == "ACTIVE":
                waiting.discard(tenant_id)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"not ACTIVE after {ACTIVE_WAIT:.0f} s: {sorted(waiting)}")
        time.sleep(0.2)
    return ids


def load(load: str, target: rawload.Target, clients: int, duration: float) -> Outcome:
    """`clients` keep-alive connections sending `target` for `duration` seconds."""
    if load == "wrk":
        return wrkload.run(target, clients=clients, duration=duration)
    return rawload.run(target, clients=clients, duration=duration)


def measure(
    stack: RunningStack,
    api_workers: int,
    clients: int,
    duration: float,
    tenants: int,
    load_with: str,
) -> tuple[list[ReadResult | Skipped], list[str]]:
    """Each read in turn on the running stack."""
    token = mint(
        stack.plan.dev.idp_key_file,
        subject="bench-directory",
        scopes=[READ_SCOPE, WRITE_SCOPE],
        audience=stack.plan.audience,
        ttl=timedelta(hours=1),
    )
    auth = {"Authorization": f"Bearer {token}"}
    url = urlsplit(stack.api_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as http:
        ids = provision(http, token, tenants)
        tenant_id = ids[0]
        full = http.get(f"/api/tenants/{tenant_id}", headers=auth)
        location = http.get(f"/api/tenants/{tenant_id}/location", headers=auth)
    reads: list[tuple[str, rawload.Target | str]] = [
        ("full", rawload.Target(host, port, f"/api/tenants/{tenant_id}", auth))
    ]
    etag = full.headers.get("etag")
    reads.append(
        (
            "304",
            rawload.Target(host, port, f"/api/tenants/{tenant_id}", {**auth, "If-None-Match": etag})
            if etag
            else "GET /api/tenants/{id} answers no ETag, so there is nothing to revalidate",
        )
    )
    reads.append(
        (
            "location",
            rawload.Target(host, port, f"/api/tenants/{tenant_id}/location", auth)
            if location.status_code == 200
            else f"GET /api/tenants/{{id}}/location answers {location.status_code}",
        )
    )
    results: list[ReadResult | Skipped] = []
    for name, target in reads:
        if isinstance(target, str):
            _log.info("skipping %s: %s", name, target)
            results.append(Skipped(name, api_workers, target))
            continue
        meter = CpuMeter({"api": stack.pids["api"]})
        before = meter.read()
        outcome = load(load_with, target, clients, duration)
        used = CpuMeter.used(before, meter.read())["api"]
        result = ReadResult(
            read=name,
            api_workers=api_workers,
            clients=clients,
            seconds=round(outcome.seconds, 2),
            requests=outcome.requests,
            per_second=round(outcome.per_second, 1),
            p50_ms=round(outcome.percentile(50), 2),
            p99_ms=round(outcome.percentile(99), 2),
            api_cpu_ms=round(1000 * used / max(1, outcome.requests), 3),
            statuses={str(code): count for code, count in sorted(outcome.statuses.items())},
            errors=outcome.errors,
        )
        _log.info("%s", result)
        results.append(result)
    return results, ids


def measure_events(stack: RunningStack, tenant_ids: list[str], rounds: int) -> EventToCache | None:
    """Event to cache over `rounds` deletions and restores (two changes each), when the stack
    publishes its lifecycle events to NATS."""
    if stack.plan.env.get("PLATFORM_EVENTS_BACKEND", "nats") != "nats":
        return None

    def token(subject: str, *scopes: str) -> str:
        return mint(
            stack.plan.dev.idp_key_file,
            subject=subject,
            scopes=list(scopes),
            audience=stack.plan.audience,
            ttl=timedelta(hours=1),
        )

    measured = asyncio.run(
        event_to_cache.measure(
            stack.api_url,
            token("bench-operator", READ_SCOPE, DELETE_SCOPE),
            token("bench-service", DIRECTORY_SCOPE),
            stack.plan.env.get("PLATFORM_EVENTS_URL", "nats://127.0.0.1:4222"),
            tenant_ids,
            rounds,
        )
    )
    _log.info(
        "event to cache over %d changes: p50 %.1f ms, p99 %.1f ms",
        len(measured.latencies_ms),
        measured.percentile(50),
        measured.percentile(99),
    )
    return measured


def report_lines(
    command: str, info: dict[str, str], results: Sequence[ReadResult | Skipped]
) -> list[str]:
    """results.md: the context, then one row per read and worker count."""
    lines = ["# Directory reads", "", f"`{command}`", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [
        "",
        "| read | API workers | clients | requests/s | p50 ms | p99 ms | API CPU ms/request "
        "| statuses | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if isinstance(result, Skipped):
            lines.append(f"| {result.read} | {result.api_workers} | skipped: {result.reason} |")
            continue
        statuses = ", ".join(f"{code}: {count}" for code, count in result.statuses.items())
        lines.append(
            f"| {result.read} | {result.api_workers} | {result.clients} | "
            f"{result.per_second:,.0f} | {result.p50_ms} | {result.p99_ms} | "
            f"{result.api_cpu_ms} | {statuses} | {result.errors} |"
        )
    return lines


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per read")
    parser.add_argument("--tenants", type=int, default=3, help="tenants provisioned first")
    parser.add_argument(
        "--api-workers",
        default="1",
        help="PLATFORM_API_WORKERS, or counts to compare (1,2): the stack starts again per count",
    )
    parser.add_argument(
        "--event-rounds",
        type=int,
        default=50,
        help="deletions and restores timed from commit to a following client's cache (0: none)",
    )
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="the load generator: wrk (C, needs `wrk` on the PATH), python (bench/rawload.py), "
        "or auto (wrk when found)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help="the stack's data")
    args = parser.parse_args(argv)
    try:
        args.api_workers = [int(n) for n in args.api_workers.split(",")]
    except ValueError:
        args.api_workers = []
    if not args.api_workers or min(args.api_workers) < 1:
        parser.error("--api-workers takes positive counts, e.g. 2 or 1,2")
    if args.clients < 1 or args.duration <= 0 or args.tenants < 1:
        parser.error("--clients, --duration and --tenants must be positive")
    if args.load == "auto":
        args.load = "wrk" if wrkload.available() else "python"
    elif args.load == "wrk" and not wrkload.available():
        parser.error("--load wrk needs `wrk` on the PATH (Debian: apt-get install wrk)")
    return args


def main(argv: Sequence[str]) -> int:
    """Start the stack per worker count, measure each read, write the report."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: list[ReadResult | Skipped] = []
    events: EventToCache | None = None
    for workers in args.api_workers:
        extra = {"PLATFORM_API_WORKERS": str(workers)}
        with running_stack(args.work_dir, extra_env=extra) as stack:
            reads, ids = measure(
                stack, workers, args.clients, args.duration, args.tenants, args.load
            )
            results += reads
            if events is None and args.event_rounds:
                events = measure_events(stack, ids, args.event_rounds)
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "load": f"{args.clients} keep-alive clients from "
        + ("wrk (2 threads)" if args.load == "wrk" else "Python (2 processes, bench/rawload.py)")
        + f" on the same machine, {args.duration:g} s per read",
    }
    command = "python -m bench directory " + " ".join(argv)
    lines = report_lines(command.strip(), info, results)
    if events is not None:
        lines += [
            "",
            f"Event to cache (a status change's commit to a directory client following the "
            f"events holding it), {len(events.latencies_ms)} changes: p50 "
            f"{events.percentile(50):.1f} ms, p99 {events.percentile(99):.1f} ms, max "
            f"{max(events.latencies_ms):.1f} ms.",
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "context": info,
                "results": [asdict(r) for r in results],
                "event_to_cache_ms": events.latencies_ms if events else None,
            },
            indent=2,
        )
        + "\n"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    measured = [r for r in results if isinstance(r, ReadResult)]
    return 0 if measured and all(r.errors == 0 for r in measured) else 1
