"""`python -m bench fleet`: fleet rollouts over N tenants, then over N x scale factor.

    python -m bench fleet --tenants 1000 --scale-factor 5 --out bench/results/fleet-rollouts

On the stack `make bench` starts (bench/stack.py), it provisions N tenants (SCHEMA mode, both
reference services) through the REST API, then measures four rollouts over the whole fleet:

- no-op, Temporal: `POST /api/rollouts` for both services, every tenant already at the newest
  version; then the same with the direct path;
- apply, Temporal: one new backend-service migration (`backend_000K_bench_K.sql`, written into
  the service's extra migrations folder, the service restarted), rolled out to backend-service;
  then another new migration the same way with the direct path, so each apply rollout applies
  exactly one migration to every tenant.

The direct path runs the worker's own `run_rollout_batch` in this process (inside the SDK's
`ActivityEnvironment`, as bench/direct.py does for provisioning), batch after batch as the
workflow does, over a rollout created with the same repository the API uses: same claims, same
signed calls, same records, no Temporal. Then it grows the fleet to N x scale factor and
measures the four again.

Per-tenant latency: from the moment its batch claimed the tenant (its `rollout_tenants` row
turning RUNNING, the database's clock, seen by a poller) to its result row (the same clock). It
includes waiting for one of the batch's `concurrency` slots. Results go to `--out`
(results.json, results.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.testing import ActivityEnvironment

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE, WRITE_SCOPE
from bench.load import ApiProvisioner, CompletionWatcher, CpuMeter, MemorySampler, run_level
from bench.polling import Polling
from bench.run import WORK_DIR, Ids, Options, context
from bench.stack import RunningStack, running_stack
from devstack.dev import REPO_ROOT
from devstack.tokens import mint
from infra.db.rollouts import RolloutRepository
from tenancy.models import StorageMode
from tenancy.rollouts import RolloutAction, RolloutRequest, RolloutStatus, WaveSpec
from tenancy.settings import Settings
from worker import worker_activities
from workflows.rollout.contracts import BatchInput, BatchResult, CallPolicy
from workflows.rollout.workflow import BATCH_FACTOR

_log = logging.getLogger("bench")
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "fleet"
TEMPORAL = "temporal"
DIRECT = "direct"
NOOP = "no-op"
APPLY = "apply"
SERVICES = ["backend-service", "auth-service"]
APPLY_SERVICE = "backend-service"
# How often the poller reads the rollout's claimed rows and its status.
POLL_INTERVAL = 0.02
ROLLOUT_DEADLINE = 3600.0
FINAL = {s.value for s in RolloutStatus} - {"RUNNING", "PAUSED"}
# The targets (N = 1,000, this 2-core machine, everything co-located).
NOOP_TARGET = 80.0
APPLY_TARGET = 56.0
GROWTH_TARGET = 0.10
RSS_TARGET_MIB = 200.0


@dataclass(frozen=True)
class FleetOptions:
    """What to measure."""

    tenants: int
    scale_factor: int
    concurrency: int | None
    provision_concurrency: int


@dataclass
class RolloutResult:
    """One rollout over the whole fleet on one path."""

    fleet: int
    path: str
    kind: str
    rollout_id: str
    status: str
    total: int
    succeeded: int
    failed: int
    wall_seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    # Where the time goes between batches: how many, the mean span from a batch's first result
    # to its last, and the mean gap from one batch's last result to the next one's first (the
    # next claim, its first tenant's calls and, on the Temporal path, the round trip through
    # the server).
    batches: int = 0
    batch_span_ms: float = math.nan
    batch_gap_ms: float = math.nan
    # The machine's 1-minute load average when the rollout ended (it is shared).
    load: float = math.nan

    @property
    def throughput(self) -> float:
        """Succeeded tenants per second over the rollout."""
        return self.succeeded / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: int) -> float:
        """Per-tenant latency percentile `q` in ms (nan without samples)."""
        values = sorted(self.latencies_ms)
        if len(values) < 2:
            return values[0] if values else math.nan
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    def cpu_ms_per_tenant(self) -> dict[str, float]:
        """CPU milliseconds per succeeded tenant, by process."""
        count = self.succeeded or 1
        return {name: s * 1000 / count for name, s in self.cpu_seconds.items()}

    def as_json(self) -> dict[str, Any]:
        """The figures of results.json."""
        return {
            "fleet": self.fleet,
            "path": self.path,
            "kind": self.kind,
            "rolloutId": self.rollout_id,
            "status": self.status,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "wallSeconds": round(self.wall_seconds, 3),
            "tenantsPerSecond": round(self.throughput, 2),
            "latencySamples": len(self.latencies_ms),
            "p50Ms": round(self.percentile(50), 1),
            "p95Ms": round(self.percentile(95), 1),
            "cpuMsPerTenant": {k: round(v, 2) for k, v in self.cpu_ms_per_tenant().items()},
            "peakRssMiB": {k: round(v, 1) for k, v in self.peak_rss_mib.items()},
            "batches": self.batches,
            "batchSpanMs": round(self.batch_span_ms, 1),
            "batchGapMs": round(self.batch_gap_ms, 1),
            "loadAverage": round(self.load, 2),
        }


class RolloutWatcher(Polling):
    """Polls one rollout: when each tenant was claimed, and whether the rollout has ended."""

    def __init__(self, conn: AsyncConnection[Any], rollout_id: str) -> None:
        self._conn = conn
        self._id = rollout_id
        self.claimed: dict[str, float] = {}
        self.ended = asyncio.Event()

    async def _poll(self) -> None:
        while True:
            cursor = await self._conn.execute(
                "SELECT tenant_id, extract(epoch FROM updated_at)::float8 FROM rollout_tenants "
                "WHERE rollout_id = %s AND status = 'RUNNING'",
                (self._id,),
            )
            for tenant_id, at in await cursor.fetchall():
                self.claimed.setdefault(tenant_id, at)
            cursor = await self._conn.execute(
                "SELECT status FROM rollouts WHERE id = %s", (self._id,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] in FINAL:
                self.ended.set()
            await asyncio.sleep(POLL_INTERVAL)

    async def outcome(self) -> tuple[str, dict[str, int], list[float]]:
        """The rollout's status, its tenants by result, and each seen tenant's latency (ms)."""
        cursor = await self._conn.execute("SELECT status FROM rollouts WHERE id = %s", (self._id,))
        row = await cursor.fetchone()
        status = row[0] if row else "MISSING"
        cursor = await self._conn.execute(
            "SELECT tenant_id, status, extract(epoch FROM updated_at)::float8 "
            "FROM rollout_tenants WHERE rollout_id = %s",
            (self._id,),
        )
        counts: dict[str, int] = {}
        latencies = []
        for tenant_id, tenant_status, at in await cursor.fetchall():
            counts[tenant_status] = counts.get(tenant_status, 0) + 1
            claimed = self.claimed.get(tenant_id)
            if tenant_status == "SUCCEEDED" and claimed is not None:
                latencies.append((at - claimed) * 1000)
        return status, counts, latencies

    async def batches(self) -> tuple[int, float, float]:
        """How many batches, their mean span and the mean gap between them (ms)."""
        cursor = await self._conn.execute(
            "SELECT extract(epoch FROM min(updated_at))::float8, "
            "extract(epoch FROM max(updated_at))::float8 FROM rollout_tenants "
            "WHERE rollout_id = %s GROUP BY batch ORDER BY batch",
            (self._id,),
        )
        spans = await cursor.fetchall()
        if not spans:
            return 0, math.nan, math.nan
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
        span = statistics.mean(last - first for first, last in spans) * 1000
        return len(spans), span, statistics.mean(gaps) * 1000 if gaps else math.nan


class DirectRollouts:
    """Rollouts without Temporal: the worker's batch activity called here, batch after batch."""

    def __init__(
        self,
        batch: Callable[..., Any],
        repository: RolloutRepository,
        concurrency: int,
        max_failure_ratio: float,
        call: CallPolicy,
    ) -> None:
        self._batch = batch
        self._repository = repository
        self._concurrency = concurrency
        self._max_failure_ratio = max_failure_ratio
        self._call = call

    async def create(self, services: list[str]) -> str:
        """A rollout of every ACTIVE tenant, one wave, as the API would record it."""
        rollout_id = uuid.uuid4().hex[:12]
        waves = [WaveSpec(name="all")]
        request = RolloutRequest(
            services=services,
            waves=waves,
            concurrency=self._concurrency,
            max_failure_ratio=self._max_failure_ratio,
        )
        await self._repository.create(rollout_id, request, services, waves, "bench-direct")
        return rollout_id

    async def run(self, rollout_id: str, services: list[str]) -> None:
        """Its batches one after another (as the workflow runs them) until none is pending."""
        batch = 1
        while True:
            env = ActivityEnvironment()
            env.info = dataclasses.replace(
                ActivityEnvironment.default_info(),
                activity_type="run_rollout_batch",
                workflow_id=f"rollout-{rollout_id}",
                started_time=datetime.now(UTC),
            )
            result: BatchResult = await env.run(
                self._batch,
                BatchInput(
                    rollout_id=rollout_id,
                    wave=0,
                    batch=batch,
                    limit=self._concurrency * BATCH_FACTOR,
                    services=services,
                    concurrency=self._concurrency,
                    call=self._call,
                ),
            )
            batch += 1
            if result.claimed == 0 and result.counts.pending == 0:
                break
        await self._repository.change_status(
            rollout_id, RolloutStatus.SUCCEEDED, "bench-direct", RolloutAction.FINISHED
        )


@contextlib.asynccontextmanager
async def direct_rollouts(settings: Settings, concurrency: int) -> AsyncIterator[DirectRollouts]:
    """The batch activity bound to the worker's own resources, and a repository to create
    rollouts with."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.require_database_url(), open=False, min_size=1, max_size=2
    )
    async with worker_activities(settings) as activities, pool:
        batch = next(fn for fn in activities if fn.__name__ == "run_rollout_batch")
        yield DirectRollouts(
            batch,
            RolloutRepository(pool),
            concurrency,
            settings.rollout_max_failure_ratio,
            CallPolicy(
                max_attempts=settings.migration_max_attempts,
                initial_interval=settings.migration_initial_interval,
                timeout=settings.migration_timeout,
            ),
        )


class Fleet:
    """The running stack, its clients, and the fleet grown so far."""

    def __init__(
        self,
        stack: RunningStack,
        http: httpx.AsyncClient,
        conn: AsyncConnection[Any],
        direct: DirectRollouts,
        options: FleetOptions,
    ) -> None:
        self.stack = stack
        self.http = http
        self.conn = conn
        self.direct = direct
        self.options = options
        self.size = 0
        self.migrations = 2  # backend-service's built-in ones
        self.provisioning: list[dict[str, Any]] = []
        token = mint(
            stack.plan.dev.idp_key_file,
            subject="bench",
            scopes=[WRITE_SCOPE, READ_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE],
            audience=stack.plan.audience,
            ttl=timedelta(hours=12),
        )
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    async def grow(self, api: ApiProvisioner, ids: Ids, target: int) -> None:
        """Provision tenants through the API until the fleet has `target`."""
        count = target - self.size
        _log.info("fleet: provisioning %d tenants (to %d)", count, target)
        samples, wall = await run_level(
            api.provision, ids.take("f", count), self.options.provision_concurrency
        )
        failed = [s for s in samples if s.status != "ACTIVE"]
        if failed:
            raise RuntimeError(f"{len(failed)} tenants did not become ACTIVE: {failed[0]}")
        self.size = target
        self.provisioning.append(
            {"tenants": count, "wallSeconds": round(wall, 1), "tenantsPerSecond": count / wall}
        )
        _log.info("fleet: %d tenants provisioned in %.1fs", count, wall)

    def ship_migration(self) -> str:
        """A new backend-service migration in its extra folder, the service restarted."""
        self.migrations += 1
        n = self.migrations
        name = f"backend_{n:04d}_bench_{n}"
        folder = self.stack.plan.dev.service_migrations_dir(APPLY_SERVICE)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.sql").write_text(
            "-- Fleet benchmark: one new column, rolled out to every existing tenant.\n"
            f"ALTER TABLE accounts ADD COLUMN IF NOT EXISTS bench_{n} text;\n"
        )
        self.stack.restart_service(APPLY_SERVICE)
        _log.info("fleet: %s shipped, %s restarted", name, APPLY_SERVICE)
        return name

    async def measure(self, path: str, kind: str) -> RolloutResult:
        """One rollout of the whole fleet on `path`, with CPU and memory around it."""
        services = SERVICES if kind == NOOP else [APPLY_SERVICE]
        pids = self.stack.pids
        cpu = CpuMeter({**pids, "bench": os.getpid()}, self_only=frozenset({"bench"}))
        before = cpu.read()
        began = time.monotonic()
        async with MemorySampler({name: pids[name] for name in ("worker", "api")}) as memory:
            if path == TEMPORAL:
                rollout_id = await self._start(services)
                async with RolloutWatcher(self.conn, rollout_id) as watcher:
                    await asyncio.wait_for(watcher.ended.wait(), ROLLOUT_DEADLINE)
            else:
                rollout_id = await self.direct.create(services)
                async with RolloutWatcher(self.conn, rollout_id) as watcher:
                    await self.direct.run(rollout_id, services)
            wall = time.monotonic() - began
        used = CpuMeter.used(before, cpu.read())
        status, counts, latencies = await watcher.outcome()
        batches, span, gap = await watcher.batches()
        result = RolloutResult(
            fleet=self.size,
            path=path,
            kind=kind,
            rollout_id=rollout_id,
            status=status,
            total=sum(counts.values()),
            succeeded=counts.get("SUCCEEDED", 0),
            failed=counts.get("FAILED", 0),
            wall_seconds=wall,
            latencies_ms=latencies,
            cpu_seconds=used,
            peak_rss_mib=memory.peak_mib,
            batches=batches,
            batch_span_ms=span,
            batch_gap_ms=gap,
            load=os.getloadavg()[0],
        )
        _log.info("fleet: %s", result.as_json())
        return result

    async def _start(self, services: list[str]) -> str:
        body: dict[str, Any] = {"services": services}
        if self.options.concurrency:
            body["concurrency"] = self.options.concurrency
        response = await self.http.post("/api/rollouts", json=body, headers=self.headers)
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/rollouts: {response.status_code} {response.text}")
        return str(response.json()["id"])


async def measure(
    stack: RunningStack,
    options: FleetOptions,
    done: Callable[[list[RolloutResult], dict[str, Any]], None],
) -> tuple[list[RolloutResult], dict[str, Any]]:
    """Both fleet sizes: grow, then no-op and apply rollouts on both paths; `done` after each
    size (the report so far, should a long run be stopped)."""
    settings = stack.settings()
    concurrency = options.concurrency or settings.rollout_concurrency
    limits = httpx.Limits(max_connections=options.provision_concurrency + 8, keepalive_expiry=2.0)
    conn = await AsyncConnection.connect(stack.env["PLATFORM_DATABASE_URL"], autocommit=True)
    watch_conn = await AsyncConnection.connect(stack.env["PLATFORM_DATABASE_URL"], autocommit=True)
    results: list[RolloutResult] = []
    async with (
        conn,
        watch_conn,
        httpx.AsyncClient(
            base_url=stack.api_url, timeout=120, trust_env=False, limits=limits
        ) as http,
        CompletionWatcher(watch_conn) as completion,
        direct_rollouts(settings, concurrency) as direct,
    ):
        fleet = Fleet(stack, http, conn, direct, options)
        api = ApiProvisioner(http, completion, StorageMode.SCHEMA.value, fleet.token)
        ids = Ids()
        for size in sorted({options.tenants, options.tenants * options.scale_factor}):
            await fleet.grow(api, ids, size)
            results.append(await fleet.measure(TEMPORAL, NOOP))
            results.append(await fleet.measure(DIRECT, NOOP))
            fleet.ship_migration()
            results.append(await fleet.measure(TEMPORAL, APPLY))
            fleet.ship_migration()
            results.append(await fleet.measure(DIRECT, APPLY))
            done(results, {"rolloutConcurrency": concurrency, "provisioning": fleet.provisioning})
    return results, {"rolloutConcurrency": concurrency, "provisioning": fleet.provisioning}


def _growth(results: Sequence[RolloutResult], kind: str, small: int, large: int) -> float:
    """How much the Temporal path's wall time per tenant grew from `small` to `large`."""
    by_fleet = {r.fleet: r for r in results if r.path == TEMPORAL and r.kind == kind}
    if small not in by_fleet or large not in by_fleet or small == large:
        return math.nan
    a, b = by_fleet[small].throughput, by_fleet[large].throughput
    return a / b - 1 if b else math.inf


def targets(results: Sequence[RolloutResult], options: FleetOptions) -> list[dict[str, Any]]:
    """The issue's targets and what this run reached (the Temporal path)."""
    small, large = options.tenants, options.tenants * options.scale_factor

    def at(kind: str) -> float:
        found = [r for r in results if (r.fleet, r.path, r.kind) == (small, TEMPORAL, kind)]
        return found[0].throughput if found else math.nan

    rss = max(
        (r.peak_rss_mib.get("worker", 0.0) for r in results if r.path == TEMPORAL), default=0.0
    )
    growth = {kind: _growth(results, kind, small, large) for kind in (NOOP, APPLY)}
    rows = [
        (
            f"no-op rollout >= {NOOP_TARGET:g} tenants/s at N={small}",
            at(NOOP),
            at(NOOP) >= NOOP_TARGET,
        ),
        (
            f"apply rollout >= {APPLY_TARGET:g} tenants/s at N={small}",
            at(APPLY),
            at(APPLY) >= APPLY_TARGET,
        ),
    ]
    for kind, value in growth.items():
        if small == large:
            break
        rows.append(
            (
                f"{kind}: wall time per tenant grows <= {GROWTH_TARGET:.0%} "
                f"from {small} to {large}",
                value * 100,
                value <= GROWTH_TARGET,
            )
        )
    rows.append((f"worker RSS peak <= {RSS_TARGET_MIB:g} MiB", rss, rss <= RSS_TARGET_MIB))
    return [{"target": t, "reached": round(v, 2), "met": bool(m)} for t, v, m in rows]


def write_report(
    out: Path,
    command: str,
    info: dict[str, str],
    results: Sequence[RolloutResult],
    extra: dict[str, Any],
    options: FleetOptions,
) -> list[Path]:
    """results.json (every figure) and results.md (a table per fleet size, the targets)."""
    out.mkdir(parents=True, exist_ok=True)
    goals = targets(results, options)
    data = {
        "command": command,
        "context": info,
        **extra,
        "rollouts": [r.as_json() for r in results],
        "targets": goals,
    }
    json_path = out / "results.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Fleet rollouts: Temporal vs direct",
        "",
        f"`{command}`",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- rollout concurrency: {extra['rolloutConcurrency']} (batches of "
        f"{extra['rolloutConcurrency'] * BATCH_FACTOR} tenants, one after another)",
        "- provisioning (Temporal, through the API): "
        + ", ".join(
            f"{p['tenants']} tenants in {p['wallSeconds']} s ({p['tenantsPerSecond']:.1f}/s)"
            for p in extra["provisioning"]
        ),
        "",
        "Per-tenant latency: from its batch claiming the tenant (its rollout row turning RUNNING)",
        "to its result row, both on PostgreSQL's clock; it includes waiting for one of the batch's",
        "`concurrency` slots. No-op: both services, every tenant already at the newest version.",
        "Apply: backend-service only, one new migration (ADD COLUMN) for every tenant.",
        "CPU ms per tenant: each process with its descendants (postgres: every backend;",
        "bench: this process, which is the whole direct path). Batches run one after another:",
        "batch span = a batch's first result to its last; gap = one batch's last result to the",
        "next one's first. Load: the machine's 1-minute load average at the rollout's end.",
    ]
    processes = sorted({name for r in results for name in r.cpu_seconds})
    for size in sorted({r.fleet for r in results}):
        lines += [
            "",
            f"## {size} tenants",
            "",
            "| path | rollout | tenants | status | wall s | tenants/s | p50 ms | p95 ms | "
            + " | ".join(f"CPU ms/t {p}" for p in processes)
            + " | worker RSS peak MiB | batches | batch span ms | gap ms | load |",
            "|" + "---|" * (13 + len(processes)),
        ]
        for r in (r for r in results if r.fleet == size):
            cpu = r.cpu_ms_per_tenant()
            rss = f"{r.peak_rss_mib.get('worker', 0):.0f}" if r.path == TEMPORAL else "-"
            lines.append(
                f"| {r.path} | {r.kind} | {r.succeeded}/{r.total} | {r.status} | "
                f"{r.wall_seconds:.1f} | {r.throughput:.1f} | {r.percentile(50):.0f} | "
                f"{r.percentile(95):.0f} | "
                + " | ".join(f"{cpu.get(p, 0):.1f}" for p in processes)
                + f" | {rss} | {r.batches} | {r.batch_span_ms:.0f} | {r.batch_gap_ms:.0f} |"
                f" {r.load:.1f} |"
            )
        for kind in (NOOP, APPLY):
            pair = {r.path: r for r in results if r.fleet == size and r.kind == kind}
            if TEMPORAL in pair and DIRECT in pair and pair[DIRECT].throughput:
                ratio = pair[DIRECT].throughput / pair[TEMPORAL].throughput
                lines.append(f"\n{kind}: direct/Temporal throughput ratio {ratio:.2f}")
    lines += ["", "## Targets (Temporal path)", "", "| target | reached | met |", "|---|---|---|"]
    lines += [
        f"| {g['target']} | {g['reached']} | {'met' if g['met'] else 'not met'} |" for g in goals
    ]
    md_path = out / "results.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path]


def parse(argv: Sequence[str]) -> tuple[FleetOptions, Path, Path, dict[str, str]]:
    """Command line -> what to measure, where to write, where the stack lives, extra env."""
    parser = argparse.ArgumentParser(
        prog="python -m bench fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenants", type=int, default=1000, help="the first fleet size (N)")
    parser.add_argument("--scale-factor", type=int, default=5, help="then N x this many")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="rollout concurrency (default: settings)"
    )
    parser.add_argument(
        "--provision-concurrency", type=int, default=32, help="clients provisioning the fleet"
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
    if args.tenants < 1 or args.scale_factor < 1 or args.provision_concurrency < 1:
        parser.error("--tenants, --scale-factor and --provision-concurrency must be positive")
    options = FleetOptions(
        tenants=args.tenants,
        scale_factor=args.scale_factor,
        concurrency=args.concurrency,
        provision_concurrency=args.provision_concurrency,
    )
    extra = dict(item.split("=", 1) for item in args.env)
    return options, args.out, args.work_dir, extra


def main(argv: Sequence[str]) -> int:
    """Start the stack, measure the fleet, write the report, stop the stack."""
    options, out, work_dir, extra_env = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "python -m bench fleet " + shlex.join(argv)
    info = {
        **context_of(options),
        "fleet sizes": f"{options.tenants} then {options.tenants * options.scale_factor}",
    }

    def report(results: list[RolloutResult], extra: dict[str, Any]) -> None:
        for path in write_report(out, command, info, results, extra, options):
            _log.info("wrote %s", path)

    with running_stack(work_dir, extra_env=extra_env) as stack:
        results, _ = asyncio.run(measure(stack, options, report))
    sys.stdout.write((out / "results.md").read_text())
    return 0 if all(r.status == "SUCCEEDED" and r.failed == 0 for r in results) else 1


def context_of(options: FleetOptions) -> dict[str, str]:
    """Where and how this run was measured (the provisioning bench's context, fleet terms)."""
    info = context(
        Options(
            tenants=options.tenants,
            concurrency=[],
            storage_mode=StorageMode.SCHEMA,
            warmup=0,
            direct=True,
            scale=0,
            scale_total=0,
        )
    )
    info.pop("tenants per level", None)
    return info
