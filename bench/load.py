"""Closed-loop load: C clients, each provisioning one tenant after another until N are done.

A tenant's latency runs from the moment its client starts (sends the POST, or calls the
first activity for the direct path) to the `occurred_at` of its ACTIVE event, written by
PostgreSQL's `clock_timestamp()` in the transition's transaction. Both clocks are this
machine's wall clock. How fast the client *notices* completion (it polls the tenants table)
does not enter the latency; it only delays that client's next tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from psycopg import AsyncConnection

from tenancy.status import TenantStatus

# How often the completion watcher reads the tenants table.
POLL_INTERVAL = 0.01
# How long a tenant whose POST answered 503 "accepted" may take to show up.
LATE_RECORD_WAIT = 600.0
FINAL = (TenantStatus.ACTIVE, TenantStatus.PROVISION_ERROR, TenantStatus.MIGRATION_ERROR)


@dataclass
class Sample:
    """One tenant: when its client started, when it was accepted, how it ended."""

    tenant_id: str
    started: float
    accepted: float | None = None
    status: str | None = None
    error: str | None = None
    # From the audit trail (epoch seconds): CREATED, -> MIGRATING, -> ACTIVE.
    created: float | None = None
    migrating: float | None = None
    active: float | None = None

    @property
    def latency(self) -> float | None:
        """Start to ACTIVE, in seconds; None unless it became ACTIVE."""
        return None if self.active is None else self.active - self.started


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a background loop started by one of the context managers below."""
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class CompletionWatcher:
    """Wakes the client of each tenant once its row reaches a final status."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CompletionWatcher:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        await _cancel(self._task)

    def expect(self, tenant_id: str) -> asyncio.Future[str]:
        """A future that resolves with the tenant's final status."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[tenant_id] = future
        return future

    async def _poll(self) -> None:
        final = [status.value for status in FINAL]
        while True:
            # A refused POST cancels its future: stop asking about that tenant.
            for tenant_id in [t for t, f in self._waiting.items() if f.done()]:
                del self._waiting[tenant_id]
            if self._waiting:
                cursor = await self._conn.execute(
                    "SELECT id, status FROM tenants WHERE id = ANY(%s) AND status = ANY(%s)",
                    (list(self._waiting), final),
                )
                for tenant_id, status in await cursor.fetchall():
                    future = self._waiting.pop(tenant_id)
                    if not future.done():
                        future.set_result(status)
            await asyncio.sleep(POLL_INTERVAL)


async def read_timeline(conn: AsyncConnection[Any], samples: Sequence[Sample]) -> None:
    """Fill each sample's CREATED / MIGRATING / ACTIVE times from the audit trail."""
    by_id = {sample.tenant_id: sample for sample in samples}
    cursor = await conn.execute(
        "SELECT tenant_id, action, new_status, extract(epoch FROM occurred_at)::float8 "
        "FROM tenant_events WHERE tenant_id = ANY(%s) ORDER BY id",
        (list(by_id),),
    )
    for tenant_id, action, new_status, at in await cursor.fetchall():
        sample = by_id[tenant_id]
        if action == "CREATED":
            sample.created = at
        elif new_status == TenantStatus.MIGRATING.value and sample.migrating is None:
            sample.migrating = at
        elif new_status == TenantStatus.ACTIVE.value:
            sample.active = at


class MemorySampler:
    """Peak resident memory of some processes, read from /proc every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self._pids = pids
        self._interval = interval
        self.peak_mib: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def rss_mib(pid: int) -> float:
        """Current resident set size of `pid` in MiB (0 if it is gone)."""
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
        return 0.0

    def sample(self) -> None:
        """Read every process once and keep the peaks."""
        for name, pid in self._pids.items():
            self.peak_mib[name] = max(self.peak_mib[name], self.rss_mib(pid))

    async def __aenter__(self) -> MemorySampler:
        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self._interval)

        self._task = asyncio.create_task(loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        await _cancel(self._task)
        self.sample()


def _proc_stats() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, own CPU seconds, CPU seconds of its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The command name (field 2) may hold spaces; everything after its ')' is numeric.
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
        stats[int(entry.name)] = (ppid, (utime + stime) / tick, (cutime + cstime) / tick)
    return stats


class CpuMeter:
    """CPU seconds each named process and its descendants used between two readings."""

    def __init__(self, pids: dict[str, int], self_only: frozenset[str] = frozenset()) -> None:
        self._pids = pids
        # Names counted without descendants: the benchmark process is every child's parent.
        self._self_only = self_only

    def read(self) -> dict[str, float]:
        """Cumulative CPU seconds per name: the process, its reaped children, its live
        descendants (PostgreSQL's backends, say)."""
        stats = _proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        totals = {}
        for name, root in self._pids.items():
            if root not in stats:
                totals[name] = 0.0
                continue
            if name in self._self_only:
                totals[name] = stats[root][1]
                continue
            total = stats[root][2]
            todo = [root]
            while todo:
                pid = todo.pop()
                total += stats[pid][1]
                todo.extend(children.get(pid, []))
            totals[name] = total
        return totals

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per name between `before` and `after`."""
        return {name: max(after[name] - before.get(name, 0.0), 0.0) for name in after}


@dataclass
class LevelResult:
    """One path at one concurrency: every sample and the phase's wall time."""

    path: str
    concurrency: int
    samples: list[Sample]
    wall_seconds: float
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    # CPU seconds per process (with its descendants) over the level.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_tenant(self) -> dict[str, float]:
        """CPU milliseconds per ACTIVE tenant, by process."""
        count = len(self.ok) or 1
        return {name: seconds * 1000 / count for name, seconds in self.cpu_seconds.items()}

    @property
    def ok(self) -> list[Sample]:
        """The samples that became ACTIVE."""
        return [s for s in self.samples if s.latency is not None]

    @property
    def throughput(self) -> float:
        """ACTIVE tenants per second over the phase."""
        return len(self.ok) / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile `q` (0-100) in milliseconds (nan without samples)."""
        values = sorted(s.latency for s in self.ok if s.latency is not None)
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0] * 1000
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000

    def step_medians(self) -> dict[str, float]:
        """Median milliseconds of each step, from the timeline."""

        def median(pairs: list[tuple[float | None, float | None]]) -> float:
            spans = [b - a for a, b in pairs if a is not None and b is not None]
            return statistics.median(spans) * 1000 if spans else float("nan")

        ok = self.ok
        return {
            "accept": median([(s.started, s.accepted) for s in ok]),
            "to_record": median([(s.started, s.created) for s in ok]),
            "storage": median([(s.created, s.migrating) for s in ok]),
            "migrations": median([(s.migrating, s.active) for s in ok]),
        }


async def run_level(
    provision: Callable[[str], Awaitable[Sample]],
    tenant_ids: Sequence[str],
    concurrency: int,
) -> tuple[list[Sample], float]:
    """Provision every id with `concurrency` clients in a closed loop; samples and wall time."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for tenant_id in tenant_ids:
        queue.put_nowait(tenant_id)
    samples: list[Sample] = []

    async def client() -> None:
        while True:
            try:
                tenant_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            samples.append(await provision(tenant_id))

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples, time.monotonic() - began


class ApiProvisioner:
    """The Temporal path, as a user sees it: POST to the REST API, wait for ACTIVE."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        watcher: CompletionWatcher,
        storage_mode: str,
        token: str,
    ) -> None:
        self._http = http
        self._watcher = watcher
        self._mode = storage_mode
        self._headers = {"Authorization": f"Bearer {token}"}

    async def submit(self, tenant_id: str) -> tuple[Sample, asyncio.Future[Sample] | None]:
        """POST one tenant; its sample, and a future of it once final (None if refused)."""
        body = {
            "id": tenant_id,
            "name": f"Bench {tenant_id}",
            "storageMode": self._mode,
            "slaTier": "STANDARD",
        }
        done = self._watcher.expect(tenant_id)
        sample = Sample(tenant_id, started=time.time())
        try:
            response = await self._http.post("/api/tenants", json=body, headers=self._headers)
        except httpx.TransportError as exc:
            done.cancel()
            sample.error = f"POST failed: {type(exc).__name__}"
            return sample, None
        sample.accepted = time.time()
        if response.status_code == 503 and "accepted" in response.text:
            # Overload: Temporal took the start but the row was not written within
            # PLATFORM_CREATE_TIMEOUT. The tenant is on its way, as a client polling GET
            # would find; wait for it, but not forever.
            sample.error = "POST answered 503 (accepted, not yet recorded)"

            async def finish_late() -> Sample:
                try:
                    sample.status = await asyncio.wait_for(done, LATE_RECORD_WAIT)
                except TimeoutError:
                    return sample
                sample.error = None
                return sample

            return sample, asyncio.ensure_future(finish_late())
        if response.status_code != 202:
            done.cancel()
            sample.error = f"HTTP {response.status_code}: {response.text[:200]}"
            return sample, None

        async def finish() -> Sample:
            sample.status = await done
            return sample

        return sample, asyncio.ensure_future(finish())

    async def provision(self, tenant_id: str) -> Sample:
        """POST one tenant and wait for its final status."""
        sample, done = await self.submit(tenant_id)
        return sample if done is None else await done


class InProcessProvisioner:
    """The direct path: call the activities in this process, no Temporal."""

    def __init__(self, run: Callable[[str], Awaitable[None]]) -> None:
        self._run = run

    async def provision(self, tenant_id: str) -> Sample:
        """Run the steps for one tenant; an exception is recorded, not raised."""
        sample = Sample(tenant_id, started=time.time())
        try:
            await self._run(tenant_id)
            sample.status = TenantStatus.ACTIVE.value
        except Exception as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        sample.accepted = sample.started
        return sample
