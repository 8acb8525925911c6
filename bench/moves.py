"""`python -m bench moves`: a tenant's move between two storage servers, timed as a service
sees it, for tenants of about 1, 10 and 100 MB.

    python -m bench moves                       # --sizes 1,10,100
    python -m bench moves --sizes 10 --rate 50 --out bench/results/moves

It starts the stack `make bench` measures (bench/stack.py) over two storage servers `pg-1` and
`pg-2` (one pool), then for each size in turn:

1. provisions a SCHEMA tenant (STANDARD) through the API and waits until it is ACTIVE;
2. fills its storage with about N MB as backend-service's own role (`bench_payload`: rows of a
   ~900-character text, its primary key and an index), the size being the sum of
   `pg_total_relation_size` over the schema's tables;
3. starts a writer: `--rate` notes a second (each text unique) to backend-service's runtime
   endpoint `POST /tenants/{id}/notes`, which finds the tenant through the directory; each
   answer's time and status are kept;
4. after a second of writes, `POST /api/tenants/{id}/move` `{"toServer": <the other server>}`,
   waits until the tenant is no longer MOVING, keeps writing 2 s more, stops the writer;
5. reads the notes back (`GET /tenants/{id}/notes`, from the target by then).

Figures per size: the total move time (the POST to the `TENANT_MOVED` event), the freeze as
the service saw it (the longest run of refused answers: from the first refused answer to the
first accepted one after it), the phases from the tenant's row (`move_phase` and `updated_at`,
polled) and events (frozen to switch = `FROZEN` to `TENANT_MOVED`), writes attempted /
accepted / refused, accepted notes not found afterwards (lost: must be 0), and CPU seconds per
process (with its descendants) from the POST to the end of the move. Results go to `--out`
(results.json, results.md); a drain's figures have their place there, filled by the drain
benchmark once it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from psycopg import AsyncConnection, sql

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from bench.load import CpuMeter
from bench.polling import Polling
from bench.run import WORK_DIR, Options, context
from bench.stack import RunningStack, running_stack
from devstack.dev import REPO_ROOT, STORAGE_DATABASE
from devstack.roles import login_url, service_role
from devstack.tokens import mint
from tenancy.models import StorageMode

_log = logging.getLogger("bench")
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "moves"
DEFAULT_SIZES = (1.0, 10.0, 100.0)
SERVICE = "backend-service"
MIB = 1024 * 1024
# The goal: the service's freeze at most 2 s for a tenant of 10 MB on these 2 cores.
GOAL_SIZE_MB = 10.0
GOAL_FREEZE_SECONDS = 2.0
# Writes before the move (the service's table made, its directory entry cached) and after it.
WARM_UP = 1.0
AFTER_MOVE = 2.0
ACTIVE_WAIT = 120.0
MOVE_WAIT = 1800.0
POLL_INTERVAL = 0.01
WRITE_TIMEOUT = 30.0
# `bench_payload` rows: a text of 28 md5s (896 characters), stored inline (under TOAST's 2 kB).
PAYLOAD_SQL = "repeat(md5(g::text || random()::text), 28)"
FILL_BATCH_BYTES = 8 * MIB
# Phases in the order a move goes through them, and the spans between them.
PHASES = ("PREPARING", "FROZEN", "COPYING", "VERIFYING", "SWITCHED")
SPANS = ("preparing", "freezing", "copying", "verifying", "switching", "frozenToSwitch")


@dataclass(frozen=True)
class Answer:
    """One write: when it was sent and answered (wall clock), its status (0: no answer)."""

    sent: float
    answered: float
    status: int
    text: str

    @property
    def ok(self) -> bool:
        """Accepted: a 2xx answer."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Freeze:
    """The longest run of refused writes: `seconds` from its first refused answer (`start`) to
    the first accepted one after it (`end`; None when none came before the writer stopped,
    then measured to the last answer); `refused` answers in it."""

    seconds: float
    start: float | None
    end: float | None
    refused: int

    @property
    def closed(self) -> bool:
        """An accepted write ended the run."""
        return self.end is not None


def freeze_window(answers: Iterable[Answer]) -> Freeze:
    """The longest run of refused answers, in the order the answers came back."""
    ordered = sorted(answers, key=lambda a: a.answered)
    runs: list[Freeze] = []
    start: float | None = None
    refused = 0
    for answer in ordered:
        if not answer.ok:
            if start is None:
                start, refused = answer.answered, 0
            refused += 1
        elif start is not None:
            runs.append(Freeze(answer.answered - start, start, answer.answered, refused))
            start = None
    if start is not None:
        runs.append(Freeze(ordered[-1].answered - start, start, None, refused))
    # The longest; the first of equals.
    return max(runs, key=lambda r: r.seconds, default=Freeze(0.0, None, None, 0))


@dataclass(frozen=True)
class Writes:
    """The writer's tally: accepted notes found afterwards, lost (accepted, not found), and
    refused ones stored all the same (answered late or not at all, yet committed)."""

    attempted: int
    accepted: int
    refused: int
    found: int
    lost: int
    refused_stored: int
    statuses: dict[str, int]


def count_writes(answers: Sequence[Answer], found_texts: Collection[str]) -> Writes:
    """Tally the answers against the notes read back afterwards."""
    found = set(found_texts)
    accepted = {a.text for a in answers if a.ok}
    refused = {a.text for a in answers if not a.ok}
    statuses = Counter(str(a.status) for a in answers)
    return Writes(
        attempted=len(answers),
        accepted=len(accepted),
        refused=len(refused),
        found=len(accepted & found),
        lost=len(accepted - found),
        refused_stored=len(refused & found),
        statuses=dict(sorted(statuses.items())),
    )


def phase_spans(
    requested: float | None, phases: Mapping[str, float], moved: float | None
) -> dict[str, float | None]:
    """Seconds between the move's steps: the request (MOVE_REQUESTED) to FROZEN, each phase to
    the next, SWITCHED to TENANT_MOVED, and FROZEN to TENANT_MOVED. None where a step was not
    seen (a phase shorter than the poll)."""
    at = [phases.get("FROZEN"), phases.get("COPYING"), phases.get("VERIFYING")]
    points = [requested, *at, phases.get("SWITCHED"), moved]

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    spans = [span(points[i], points[i + 1]) for i in range(len(points) - 1)]
    return dict(zip(SPANS, [*spans, span(phases.get("FROZEN"), moved)], strict=True))


@dataclass
class MoveResult:
    """One tenant's move and what the writer saw of it."""

    size_mb: float
    tenant_id: str
    from_server: str
    to_server: str
    bytes_before: int
    bytes_after: int | None
    # "ACTIVE on pg-2", or how the move ended otherwise.
    outcome: str
    # The POST to TENANT_MOVED (None: it did not switch).
    total_seconds: float | None
    freeze: Freeze
    spans: dict[str, float | None]
    writes: Writes
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # The machine's 1-minute load average at the move's end (it is shared).
    load: float = 0.0

    @property
    def moved(self) -> bool:
        """The tenant switched to the target."""
        return self.total_seconds is not None

    def as_json(self) -> dict[str, Any]:
        """The figures of results.json."""

        def r(value: float | None, digits: int = 3) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "sizeMb": self.size_mb,
            "tenantId": self.tenant_id,
            "fromServer": self.from_server,
            "toServer": self.to_server,
            "bytesBefore": self.bytes_before,
            "bytesAfter": self.bytes_after,
            "outcome": self.outcome,
            "totalSeconds": r(self.total_seconds),
            "freezeSeconds": r(self.freeze.seconds),
            "freeze": {**asdict(self.freeze), "closed": self.freeze.closed},
            "spans": {k: r(v) for k, v in self.spans.items()},
            "writes": asdict(self.writes),
            "cpuSeconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()},
            "loadAverage": round(self.load, 2),
        }


def goal(results: Sequence[MoveResult]) -> dict[str, Any] | None:
    """The issue's goal at 10 MB (None when that size was not measured): met when the move
    switched, lost no write and the service's freeze was at most 2 s."""
    found = [r for r in results if r.size_mb == GOAL_SIZE_MB]
    if not found:
        return None
    result = found[0]
    met = (
        result.moved
        and result.writes.lost == 0
        and result.freeze.closed
        and result.freeze.seconds <= GOAL_FREEZE_SECONDS
    )
    return {
        "target": f"freeze (service) <= {GOAL_FREEZE_SECONDS:g} s at {GOAL_SIZE_MB:g} MB",
        "reached": round(result.freeze.seconds, 2),
        "met": bool(met),
    }


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_lines(
    command: str,
    info: Mapping[str, str],
    results: Sequence[MoveResult],
    drain: Mapping[str, Any] | None = None,
) -> list[str]:
    """results.md: the context, a row per size, then each size's phases and CPU, the goal,
    and the drain's place."""
    lines = ["# Tenant moves", "", f"`{command}`", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [
        "",
        "Total: the POST /move to the TENANT_MOVED event. Freeze (service): the longest run of",
        "writes the reference service refused (non-2xx or no answer), from the first refused",
        "answer to the first accepted one after it ('open': none accepted before the writer",
        "stopped). Frozen to switch: the row's phase FROZEN to TENANT_MOVED. Lost: accepted",
        "notes not read back from the target afterwards (must be 0). CPU: seconds per process",
        "with its descendants, from the POST to the end of the move.",
        "",
        "| MB | MB measured | total s | freeze s (service) | frozen-to-switch s "
        "| writes ok / refused / lost | CPU s (total) | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        freeze = _s(r.freeze.seconds) + ("" if r.freeze.closed or not r.freeze.refused else " open")
        lines.append(
            f"| {r.size_mb:g} | {r.bytes_before / MIB:.1f} | {_s(r.total_seconds, 1)} | {freeze} "
            f"| {_s(r.spans.get('frozenToSwitch'))} "
            f"| {r.writes.accepted} / {r.writes.refused} / {r.writes.lost} "
            f"| {sum(r.cpu_seconds.values()):.1f} | {r.outcome} |"
        )
    for r in results:
        processes = sorted(r.cpu_seconds)
        statuses = ", ".join(f"{code}: {n}" for code, n in r.writes.statuses.items())
        lines += [
            "",
            f"## {r.size_mb:g} MB",
            "",
            f"Tenant `{r.tenant_id}`, {r.from_server} -> {r.to_server}, "
            f"{r.bytes_before / MIB:.1f} MB before, "
            + ("-" if r.bytes_after is None else f"{r.bytes_after / MIB:.1f} MB")
            + f" on the target; load average {r.load:.2f} at the end.",
            f"Writes: {r.writes.attempted} attempted ({statuses}); {r.writes.found} accepted "
            f"found afterwards, {r.writes.lost} lost, {r.writes.refused_stored} refused yet "
            f"stored; {r.freeze.refused} refused in the freeze.",
            "",
            "| " + " | ".join(f"{name} s" for name in SPANS) + " |",
            "|" + "---|" * len(SPANS),
            "| " + " | ".join(_s(r.spans.get(name)) for name in SPANS) + " |",
            "",
            "| " + " | ".join(f"CPU s {p}" for p in processes) + " |",
            "|" + "---|" * len(processes),
            "| " + " | ".join(f"{r.cpu_seconds[p]:.2f}" for p in processes) + " |",
        ]
    target = goal(results)
    if target is not None:
        lines += [
            "",
            "## Goal",
            "",
            "| target | reached | met |",
            "|---|---|---|",
            f"| {target['target']} | {target['reached']} | "
            f"{'met' if target['met'] else 'not met'} |",
        ]
    lines += ["", "## Drain", ""]
    if drain is None:
        lines.append("Not measured by this run (the drain benchmark fills this section).")
    else:
        lines += [f"- {key}: {value}" for key, value in drain.items()]
    return lines


def write_report(
    out: Path,
    command: str,
    info: Mapping[str, str],
    results: Sequence[MoveResult],
    drain: Mapping[str, Any] | None = None,
) -> list[Path]:
    """results.json (every figure) and results.md."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "command": command,
        "context": dict(info),
        "moves": [r.as_json() for r in results],
        "goal": goal(results),
        # The drain's figures (tenants per minute, CPU per process) go here.
        "drain": None if drain is None else dict(drain),
    }
    json_path = out / "results.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path = out / "results.md"
    md_path.write_text("\n".join(report_lines(command, info, results, drain)) + "\n")
    return [json_path, md_path]


# --- The run on the stack -------------------------------------------------------------------


class Writer:
    """`rate` notes a second to the service's runtime endpoint, each in its own request (an
    open loop: a slow answer does not hold the next write back), until stopped."""

    def __init__(self, http: httpx.AsyncClient, tenant_id: str, rate: float) -> None:
        self._http = http
        self._tenant_id = tenant_id
        self._rate = rate
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _write(self, text: str) -> None:
        sent = time.time()
        try:
            response = await self._http.post(
                f"/tenants/{self._tenant_id}/notes", json={"text": text}
            )
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        self.answers.append(Answer(sent, time.time(), status, text))

    async def _run(self) -> None:
        writes: list[asyncio.Task[None]] = []
        began = time.monotonic()
        n = 0
        while not self._stop.is_set():
            text = f"move-bench {self._tenant_id} {n}"
            writes.append(asyncio.create_task(self._write(text)))
            n += 1
            pause = began + n / self._rate - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(pause, 0.0))
        await asyncio.gather(*writes)


class PhaseWatcher(Polling):
    """Polls the tenant's row: when it entered each phase of its move (its `updated_at`, the
    database's clock), and when it is MOVING no more."""

    def __init__(self, conn: AsyncConnection[Any], tenant_id: str) -> None:
        self._conn = conn
        self._id = tenant_id
        self.phases: dict[str, float] = {}
        self.status = ""
        self.server = ""
        self.status_reason: str | None = None
        self.settled = asyncio.Event()
        self._seen_moving = False
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            cursor = await self._conn.execute(
                "SELECT status, move_phase, extract(epoch FROM updated_at)::float8, "
                "storage_server, status_reason FROM tenants WHERE id = %s",
                (self._id,),
            )
            row = await cursor.fetchone()
            if row is not None:
                self.status, phase, at, self.server, self.status_reason = row
                if phase is not None:
                    self.phases.setdefault(phase, at)
                if self.status == "MOVING":
                    self._seen_moving = True
                elif self._seen_moving:
                    self.settled.set()
            await asyncio.sleep(POLL_INTERVAL)


class MoveBench:
    """The moves on a running stack, one size after another."""

    def __init__(
        self,
        stack: RunningStack,
        api: httpx.AsyncClient,
        service: httpx.AsyncClient,
        conn: AsyncConnection[Any],
        rate: float,
    ) -> None:
        self.stack = stack
        self.api = api
        self.service = service
        self.conn = conn
        self.rate = rate
        token = mint(
            stack.plan.dev.idp_key_file,
            subject="bench-moves",
            scopes=[WRITE_SCOPE, READ_SCOPE, SERVERS_WRITE_SCOPE],
            audience=stack.plan.audience,
            ttl=timedelta(hours=12),
        )
        self.headers = {"Authorization": f"Bearer {token}"}
        self.run_id = os.urandom(2).hex()

    def service_url(self, server: str) -> str:
        """backend-service's own role on storage server `server` (its password included)."""
        role = service_role(SERVICE)
        planned = next(p for p in self.stack.plan.postgres if p.spec.name == server)
        login = next(login for login in planned.layout.services if login.role == role)
        return login_url(planned.address, login, STORAGE_DATABASE)

    async def provision(self, tenant_id: str) -> None:
        """A SCHEMA tenant (STANDARD), once ACTIVE."""
        body = {
            "id": tenant_id,
            "name": f"Move bench {tenant_id}",
            "storageMode": StorageMode.SCHEMA.value,
            "slaTier": "STANDARD",
        }
        response = await self.api.post("/api/tenants", json=body, headers=self.headers)
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/tenants: {response.status_code} {response.text}")
        deadline = time.monotonic() + ACTIVE_WAIT
        while True:
            answer = await self.api.get(f"/api/tenants/{tenant_id}", headers=self.headers)
            status = answer.json().get("status") if answer.status_code == 200 else None
            if status == "ACTIVE":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tenant_id} is {status}, not ACTIVE after {ACTIVE_WAIT} s")
            await asyncio.sleep(0.2)

    async def server_of(self, tenant_id: str) -> str:
        """The storage server the tenant's row names."""
        cursor = await self.conn.execute(
            "SELECT storage_server FROM tenants WHERE id = %s", (tenant_id,)
        )
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            raise RuntimeError(f"{tenant_id} has no storage server")
        return str(row[0])

    @staticmethod
    async def size_of(conn: AsyncConnection[Any], schema: str) -> int:
        """Bytes of the schema's tables (with their indexes and TOAST)."""
        cursor = await conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')",
            (schema,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def fill(self, server: str, schema: str, size_mb: float) -> int:
        """About `size_mb` MB into the tenant's storage as backend-service's role; the size."""
        target = int(size_mb * MIB)
        table = sql.Identifier(schema, "bench_payload")
        async with await AsyncConnection.connect(self.service_url(server), autocommit=True) as c:
            await c.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id BIGINT GENERATED ALWAYS AS IDENTITY "
                    "PRIMARY KEY, payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL "
                    "DEFAULT clock_timestamp())"
                ).format(table)
            )
            await c.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS bench_payload_created_at_idx ON {} (created_at)"
                ).format(table)
            )
            size = await self.size_of(c, schema)
            per_row = 1100.0  # bytes, a first guess; then what the table shows
            rows_in = 0
            while size < target:
                batch = max(1, min(int((target - size) / per_row), int(FILL_BATCH_BYTES / per_row)))
                before = size
                await c.execute(
                    sql.SQL(
                        "INSERT INTO {} (payload) SELECT " + PAYLOAD_SQL + " FROM "
                        "generate_series(1, %s) g"
                    ).format(table),
                    (batch,),
                )
                rows_in += batch
                size = await self.size_of(c, schema)
                if size > before:
                    per_row = (size - before) / batch
            await c.execute(sql.SQL("ANALYZE {}").format(table))
            _log.info("moves: %s holds %.1f MB (%d rows added)", schema, size / MIB, rows_in)
            return size

    async def events(self, tenant_id: str, since: float) -> dict[str, tuple[float, str | None]]:
        """The move's events since `since` (epoch seconds): action -> (when, reason)."""
        cursor = await self.conn.execute(
            "SELECT action, extract(epoch FROM occurred_at)::float8, reason FROM tenant_events "
            "WHERE tenant_id = %s AND action = ANY(%s) AND occurred_at >= to_timestamp(%s) "
            "ORDER BY id",
            (tenant_id, ["MOVE_REQUESTED", "TENANT_MOVED", "MOVE_FAILED"], since - 1.0),
        )
        return {action: (at, reason) for action, at, reason in await cursor.fetchall()}

    async def notes(self, tenant_id: str) -> set[str]:
        """The texts of the tenant's notes, read through the service."""
        deadline = time.monotonic() + ACTIVE_WAIT
        while True:
            response = await self.service.get(f"/tenants/{tenant_id}/notes")
            if response.status_code == 200:
                return {item["text"] for item in response.json()["items"]}
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET notes: {response.status_code} {response.text}")
            await asyncio.sleep(0.2)

    async def measure(self, size_mb: float, index: int) -> MoveResult:
        """One tenant of `size_mb` MB moved to the other server under the writer."""
        tenant_id = f"mv{self.run_id}_{index}_{int(size_mb * 10)}"
        schema = f"tenant_{tenant_id}"
        _log.info("moves: %g MB, tenant %s", size_mb, tenant_id)
        await self.provision(tenant_id)
        source = await self.server_of(tenant_id)
        target = next(p.spec.name for p in self.stack.plan.postgres if p.spec.name != source)
        size = await self.fill(source, schema, size_mb)
        pids = {**self.stack.pids, "bench": os.getpid()}
        cpu = CpuMeter(pids, self_only=frozenset({"bench"}))
        async with Writer(self.service, tenant_id, self.rate) as writer:
            await asyncio.sleep(WARM_UP)
            async with PhaseWatcher(self.conn, tenant_id) as watcher:
                before = cpu.read()
                posted = time.time()
                response = await self.api.post(
                    f"/api/tenants/{tenant_id}/move",
                    json={"toServer": target, "reason": "bench moves"},
                    headers=self.headers,
                )
                if response.status_code != 202:
                    raise RuntimeError(f"POST move: {response.status_code} {response.text}")
                await asyncio.wait_for(watcher.settled.wait(), MOVE_WAIT)
                used = CpuMeter.used(before, cpu.read())
            await asyncio.sleep(AFTER_MOVE)
        events = await self.events(tenant_id, posted)
        moved = events.get("TENANT_MOVED")
        if watcher.status == "ACTIVE" and watcher.server == target and moved is not None:
            outcome = f"ACTIVE on {target}"
        else:
            failed = events.get("MOVE_FAILED")
            outcome = f"{watcher.status} on {watcher.server}" + (
                f" (MOVE_FAILED: {failed[1]})" if failed else ""
            )
        found = await self.notes(tenant_id)
        after: int | None = None
        if watcher.server == target:
            async with await AsyncConnection.connect(self.service_url(target)) as c:
                after = await self.size_of(c, schema)
        requested = events.get("MOVE_REQUESTED")
        result = MoveResult(
            size_mb=size_mb,
            tenant_id=tenant_id,
            from_server=source,
            to_server=target,
            bytes_before=size,
            bytes_after=after,
            outcome=outcome,
            total_seconds=None if moved is None else moved[0] - posted,
            freeze=freeze_window(writer.answers),
            spans=phase_spans(
                requested[0] if requested else None,
                watcher.phases,
                moved[0] if moved else None,
            ),
            writes=count_writes(writer.answers, found),
            cpu_seconds=used,
            load=os.getloadavg()[0],
        )
        _log.info("moves: %s", result.as_json())
        return result


async def measure(stack: RunningStack, options: MoveOptions, done: Any) -> list[MoveResult]:
    """Every size in turn; `done(results)` after each (the report so far)."""
    port, _ = stack.plan.dev.service_ports()[SERVICE]
    results: list[MoveResult] = []
    limits = httpx.Limits(max_connections=64, keepalive_expiry=2.0)
    async with (
        await AsyncConnection.connect(stack.env["PLATFORM_DATABASE_URL"], autocommit=True) as conn,
        httpx.AsyncClient(base_url=stack.api_url, timeout=60, trust_env=False) as api,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=WRITE_TIMEOUT,
            trust_env=False,
            limits=limits,
        ) as service,
    ):
        bench = MoveBench(stack, api, service, conn, options.rate)
        for index, size in enumerate(options.sizes):
            results.append(await bench.measure(size, index))
            done(results)
    return results


@dataclass(frozen=True)
class MoveOptions:
    """What to measure and where."""

    sizes: tuple[float, ...]
    rate: float
    out: Path = DEFAULT_OUT
    work_dir: Path = WORK_DIR
    env: dict[str, str] = field(default_factory=dict)


def parse(argv: Sequence[str]) -> MoveOptions:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench moves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default="1,10,100", help="tenant sizes in MB, comma-separated (1,10,100)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="the writer's notes per second")
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
    try:
        sizes = tuple(float(s) for s in args.sizes.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        parser.error("--sizes takes positive sizes in MB, e.g. 1,10,100")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    extra = dict(item.split("=", 1) for item in args.env)
    return MoveOptions(sizes, args.rate, args.out, args.work_dir, extra)


def main(argv: Sequence[str]) -> int:
    """Start the stack over two servers, move a tenant per size, write the report."""
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "python -m bench moves " + shlex.join(argv)
    info = context(
        Options(
            tenants=len(options.sizes),
            concurrency=[],
            storage_mode=StorageMode.SCHEMA,
            warmup=0,
            direct=False,
            scale=0,
            scale_total=0,
            servers=(2,),
        )
    )
    info.pop("tenants per level", None)
    info["writer"] = (
        f"{options.rate:g} notes/s to {SERVICE}'s POST /tenants/{{id}}/notes, "
        f"{WARM_UP:g} s before the move, {AFTER_MOVE:g} s after"
    )

    def report(results: list[MoveResult]) -> None:
        for path in write_report(options.out, command.strip(), info, results):
            _log.info("wrote %s", path)

    with running_stack(options.work_dir, extra_env=options.env, servers=2) as stack:
        results = asyncio.run(measure(stack, options, report))
    sys.stdout.write((options.out / "results.md").read_text())
    return 0 if all(r.moved and r.writes.lost == 0 for r in results) else 1
