"""`make bench`: provision tenants through the real stack and, side by side, directly.

    python -m bench                                  # C = 1, 8, 32, 128; 100 tenants each
    python -m bench --tenants 200 --concurrency 1,32 --storage-mode DATABASE
    python -m bench --scale 1000 --scale-total 5000  # adds the scale figures
    python -m bench --transport http,events          # services by HTTP, then by command
    python -m bench --servers 1,3 --no-direct        # tenants over one server, then three

For each concurrency C it provisions max(N, 2*C) tenants through the REST API (the Temporal
path) and as many by calling the activities in-process (the direct path), after a few
unmeasured warm-up tenants each. With `--transport events` it then starts the stack again with
the reference services taking their calls as commands on the bus (`PLATFORM_DEV_SERVICE_TRANSPORT
=events`) and measures the Temporal path there too (path `events`). With `--servers N` the
tenants are placed on N embedded PostgreSQL servers in one pool (PLATFORM_STORAGE_SERVERS);
`--servers 1,3` measures over one server first, then starts the stack again over three and
measures the Temporal path there (path `servers3`), so the report sets the CPU per tenant and
the latency of both side by side. Results go to `--out` (results.json, results.md, chart.png).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.auth import READ_SCOPE, WRITE_SCOPE
from bench.direct import DirectProvisioner, direct_provisioner
from bench.load import (
    ApiProvisioner,
    CompletionWatcher,
    CpuMeter,
    InProcessProvisioner,
    LevelResult,
    MemorySampler,
    Sample,
    read_timeline,
    run_level,
)
from bench.report import (
    DIRECT,
    EVENTS,
    TEMPORAL,
    Report,
    ScalePoint,
    ScaleResult,
    servers_path,
    summary_lines,
    write,
)
from bench.stack import RunningStack, running_stack
from devstack.dev import REPO_ROOT
from devstack.temporal import cli_path
from devstack.tokens import mint
from infra.db.servers import ServerRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec

_log = logging.getLogger("bench")
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
WORK_DIR = REPO_ROOT / ".benchdata"
SCALE_PROBES = 20
# The scale run's POSTs in flight at once: all of a 1,000-tenant batch, so that every one of
# them is in flight together (a POST holds until its row is written).
SUBMITTERS = 1000


@dataclass(frozen=True)
class Options:
    """What to measure."""

    tenants: int
    concurrency: list[int]
    storage_mode: StorageMode
    warmup: int
    direct: bool
    scale: int
    scale_total: int
    # "http" (the main run, with the direct baseline and scale) and/or "events".
    transports: tuple[str, ...] = ("http",)
    # Storage servers: the main runs over the first count, the Temporal path again over each
    # further one.
    servers: tuple[int, ...] = (1,)


class Ids:
    """Tenant ids unique to this run: `b<run>_<path><C>_<n>`."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(2)
        self._n = 0

    def take(self, tag: str, count: int) -> list[str]:
        """`count` fresh ids tagged `tag` (letters and digits)."""
        ids = [f"b{self.run}_{tag}_{self._n + i:05d}" for i in range(count)]
        self._n += count
        return ids


async def measure_level(
    path: str,
    provisioner: ApiProvisioner | InProcessProvisioner,
    conn: AsyncConnection[Any],
    ids: Ids,
    concurrency: int,
    options: Options,
    pids: dict[str, int],
    cpu_pids: dict[str, int],
) -> LevelResult:
    """Warm up, then provision max(N, 2C) tenants at `concurrency` on one path."""
    tag = f"{path[0]}{concurrency}"
    await run_level(provisioner.provision, ids.take(f"{tag}w", options.warmup), concurrency)
    count = max(options.tenants, 2 * concurrency)
    cpu = CpuMeter(cpu_pids, self_only=frozenset({"bench"}))
    before = cpu.read()
    async with MemorySampler(pids) as memory:
        samples, wall = await run_level(provisioner.provision, ids.take(tag, count), concurrency)
    used = CpuMeter.used(before, cpu.read())
    await read_timeline(conn, samples)
    result = LevelResult(path, concurrency, samples, wall, memory.peak_mib, used)
    for line in summary_lines([result]):
        _log.info("%s", line)
    return result


async def submit_all(
    api: ApiProvisioner, tenant_ids: Sequence[str]
) -> tuple[list[Sample], list[asyncio.Future[Sample]]]:
    """POST every id (up to SUBMITTERS at a time) without waiting for completion."""
    queue = list(reversed(tenant_ids))
    samples: list[Sample] = []
    pending: list[asyncio.Future[Sample]] = []

    async def submitter() -> None:
        while queue:
            sample, done = await api.submit(queue.pop())
            samples.append(sample)
            if done is not None:
                pending.append(done)

    await asyncio.gather(*(submitter() for _ in range(min(SUBMITTERS, len(tenant_ids)))))
    return samples, pending


def peak_in_flight(samples: Sequence[Sample]) -> int:
    """The most tenants requested but not yet ACTIVE at any one time."""
    done = [s for s in samples if s.active is not None]
    edges = sorted([(s.started, 1) for s in done] + [(s.active, -1) for s in done])
    peak = current = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


async def measure_scale(
    api: ApiProvisioner,
    conn: AsyncConnection[Any],
    ids: Ids,
    options: Options,
    worker_pid: int,
) -> ScaleResult:
    """`--scale` tenants submitted at once, then C=1 latency at that many and `--scale-total`."""
    _log.info("scale: submitting %d tenants at once", options.scale)
    began = time.monotonic()
    async with MemorySampler({"worker": worker_pid}) as memory:
        samples, pending = await submit_all(api, ids.take("s", options.scale))
        await asyncio.gather(*pending)
    wall = time.monotonic() - began
    await read_timeline(conn, samples)
    result = ScaleResult(
        tenants=options.scale,
        wall_seconds=wall,
        peak_in_flight=peak_in_flight(samples),
        worker_peak_rss_mib=memory.peak_mib["worker"],
        worker_end_rss_mib=MemorySampler.rss_mib(worker_pid),
        failures=sum(1 for s in samples if s.status != "ACTIVE"),
        late=sum(
            1
            for s in samples
            if s.status == "ACTIVE" and s.accepted and s.created and s.created > s.accepted
        ),
    )
    _log.info("scale: %s", result)
    existing = options.scale
    for target in sorted({options.scale, options.scale_total}):
        if target > existing:
            _log.info("scale: growing to %d tenants", target)
            more, pending = await submit_all(api, ids.take("s", target - existing))
            await asyncio.gather(*pending)
            result.failures += sum(1 for s in more if s.status != "ACTIVE")
            existing = target
        probes, _ = await run_level(api.provision, ids.take("p", SCALE_PROBES), 1)
        await read_timeline(conn, probes)
        level = LevelResult(TEMPORAL, 1, probes, 1.0)
        result.points.append(ScalePoint(existing, level.percentile(50), level.percentile(95)))
        _log.info("scale: %s", result.points[-1])
        existing += SCALE_PROBES
    return result


async def measure(
    stack: RunningStack, options: Options, path: str = TEMPORAL
) -> tuple[list[LevelResult], Any]:
    """Every level on the API path (labelled `path`) and, for the HTTP stack, the direct
    path, then the scale figures if asked for."""
    baseline = path == TEMPORAL
    token = mint(
        stack.plan.dev.idp_key_file,
        subject="bench",
        scopes=[WRITE_SCOPE, READ_SCOPE],
        audience=stack.plan.audience,
        ttl=timedelta(hours=12),
    )
    ids = Ids()
    pids = {name: stack.pids[name] for name in ("worker", "api")}
    # Every process of the stack, and this one (the load generator and the direct path).
    cpu_pids = {**stack.pids, "bench": os.getpid()}
    results: list[LevelResult] = []
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
    # goes out on a connection the server is closing.
    limits = httpx.Limits(
        max_connections=max([*options.concurrency, SUBMITTERS if options.scale else 0]) + 8,
        keepalive_expiry=2.0,
    )
    conn = await AsyncConnection.connect(stack.env["PLATFORM_DATABASE_URL"], autocommit=True)
    async with (
        conn,
        httpx.AsyncClient(
            base_url=stack.api_url, timeout=120, trust_env=False, limits=limits
        ) as http,
        CompletionWatcher(conn) as watcher,
        AsyncExitStack() as resources,
    ):
        api = ApiProvisioner(http, watcher, options.storage_mode.value, token)
        local = None
        if options.direct and baseline:
            # The direct path calls the services over HTTP in this process.
            direct = await resources.enter_async_context(direct_provisioner(stack.settings()))
            local = InProcessProvisioner(_direct_run(direct, options.storage_mode))
        for concurrency in options.concurrency:
            results.append(
                await measure_level(path, api, conn, ids, concurrency, options, pids, cpu_pids)
            )
            if local is not None:
                results.append(
                    await measure_level(
                        DIRECT, local, conn, ids, concurrency, options, pids, cpu_pids
                    )
                )
        scale = (
            await measure_scale(api, conn, ids, options, stack.pids["worker"])
            if options.scale and baseline
            else None
        )
    return results, scale


async def tenants_per_server(stack: RunningStack) -> str:
    """How the run's tenants spread over the storage servers, e.g. `pg-1 12, pg-2 11`."""
    names = [server.name for server in stack.settings().storage_fleet()]
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        stack.env["PLATFORM_DATABASE_URL"], min_size=1, max_size=1, open=False
    )
    async with pool:
        records = await ServerRepository(pool).records(names)
    return ", ".join(f"{name} {records[name].tenants}" for name in names)


def _direct_run(direct: DirectProvisioner, mode: StorageMode) -> Any:
    async def run(tenant_id: str) -> None:
        await direct.provision(
            TenantSpec(
                id=tenant_id,
                name=f"Bench {tenant_id}",
                storage_mode=mode,
                sla_tier=SlaTier.STANDARD,
            )
        )

    return run


def context(options: Options) -> dict[str, str]:
    """Where and how this run was measured."""
    version = subprocess.run(
        [str(cli_path()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "Temporal": version or "unknown",
        "storage mode": options.storage_mode.value,
        "services": "backend-service, auth-service, over " + " then ".join(options.transports),
        "tenants per level": f"max({options.tenants}, 2*C) after {options.warmup} warm-up",
        "storage servers": " then ".join(str(n) for n in options.servers),
    }


def parse(argv: Sequence[str] | None) -> tuple[Options, Path, Path, dict[str, str]]:
    """Command line -> what to measure, where to write, where the stack lives, extra env."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenants", type=int, default=100, help="tenants per level (N)")
    parser.add_argument("--concurrency", default="1,8,32,128", help="levels, comma-separated")
    parser.add_argument("--storage-mode", choices=["SCHEMA", "DATABASE"], default="SCHEMA")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured tenants per level")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    parser.add_argument("--scale", type=int, default=0, help="tenants submitted at once")
    parser.add_argument("--scale-total", type=int, default=0, help="then grow to this many")
    parser.add_argument(
        "--transport",
        default="http",
        help="how the worker calls the services: http, events, or both (http,events)",
    )
    parser.add_argument(
        "--servers",
        default="1",
        help="storage servers tenants spread over: N, or counts to compare in one run (1,3)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help="the stack's data")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the stack's processes (repeatable)",
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1 or args.tenants < 1 or args.warmup < 0:
        parser.error("concurrency levels and --tenants must be positive, --warmup >= 0")
    transports = tuple(t.strip() for t in args.transport.split(",") if t.strip())
    if not transports or not set(transports) <= {"http", "events"}:
        parser.error("--transport takes http, events or http,events")
    try:
        servers = tuple(int(n) for n in args.servers.split(","))
    except ValueError:
        servers = ()
    if not servers or min(servers) < 1 or len(set(servers)) < len(servers):
        parser.error("--servers takes distinct positive counts, e.g. 3 or 1,3")
    extra = dict(item.split("=", 1) for item in args.env)
    options = Options(
        tenants=args.tenants,
        concurrency=levels,
        storage_mode=StorageMode(args.storage_mode),
        warmup=args.warmup,
        direct=not args.no_direct,
        scale=args.scale,
        scale_total=max(args.scale_total, args.scale),
        transports=transports,
        servers=servers,
    )
    return options, args.out, args.work_dir, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Start the stack, measure, write the report, stop the stack."""
    argv = sys.argv[1:] if argv is None else list(argv)
    options, out, work_dir, extra = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "make bench" + (f" BENCH_ARGS={shlex.quote(' '.join(argv))}" if argv else "")
    levels: list[LevelResult] = []
    scale = None
    first, *more = options.servers
    info = context(options)
    if "http" in options.transports:
        with running_stack(work_dir, extra_env=extra, servers=first) as stack:
            levels, scale = asyncio.run(measure(stack, options))
            if first > 1:
                info[f"tenants per server ({first})"] = asyncio.run(tenants_per_server(stack))
        for count in more:
            with running_stack(work_dir, extra_env=extra, servers=count) as stack:
                levels += asyncio.run(measure(stack, options, path=servers_path(count)))[0]
                spread = asyncio.run(tenants_per_server(stack))
            _log.info("tenants per server over %d servers: %s", count, spread)
            info[f"tenants per server ({count})"] = spread
    if "events" in options.transports:
        with running_stack(
            work_dir, extra_env=extra, service_transport="events", servers=first
        ) as stack:
            levels += asyncio.run(measure(stack, options, path=EVENTS))[0]
    report = Report(command, info, levels, scale, options.servers)
    for path in write(report, out):
        _log.info("wrote %s", path)
    sys.stdout.write("\n".join(summary_lines(levels)) + "\n")
    return 0 if all(len(r.ok) == len(r.samples) for r in levels) else 1
