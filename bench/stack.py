"""The stack the benchmark measures: the very one `make dev` runs, on ports of its own.

Everything starts from `devstack.dev` (embedded PostgreSQL, Temporal dev server with its
SQLite file, both reference services, `python worker.py`, the API under uvicorn; with
`--servers N`, N embedded PostgreSQL servers in one pool of storage servers), with its
data in a folder of the benchmark's own, so a running `make dev` is neither disturbed nor
measured. Children log to files there (JSON, as in production), not to the terminal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from devstack.dev import (
    REPO_ROOT,
    DevServer,
    DevSettings,
    Plan,
    http_ok,
    make_plan,
    spawn_service,
    start_stack,
)
from devstack.supervisor import Stack
from tenancy.settings import Settings

_log = logging.getLogger("bench")

Transport = Literal["http", "events"]
# Ten above `make dev`'s ports, so both can run at once.
BENCH_API_PORT = 8010
# With `--servers N`, every tenant's pool.
BENCH_POOL = "bench"


@dataclass(frozen=True)
class RunningStack:
    """What the load generator and the direct baseline need of the running stack."""

    plan: Plan
    api_url: str
    # pid of each child by name (worker, api, ...), for memory sampling.
    pids: dict[str, int]
    # The supervisor of the children, to restart one (a reference service given a new
    # migration, in fleet mode).
    supervisor: Stack | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment every child was given (database, Temporal, services, keys)."""
        return self.plan.env

    def settings(self) -> Settings:
        """The platform settings the worker runs with, for the in-process baseline: read
        from the children's environment exactly as the worker reads its own."""
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def restart_service(self, name: str) -> None:
        """Stop reference service `name` and start it again (it reads its migrations at
        start-up), waiting until it answers; its new pid replaces the old one in `pids`."""
        assert self.supervisor is not None
        supervisor = self.supervisor
        child = next(c for c in supervisor.children if c.name == name)
        child.stop()
        supervisor.children.remove(child)
        spawn_service(supervisor, self.plan, name, essential=False)
        port, _ = self.plan.dev.service_ports()[name]
        supervisor.wait_until(name, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        self.pids[name] = next(c.proc.pid for c in supervisor.children if c.name == name)


def bench_fleet(dev: DevSettings, count: int) -> tuple[DevServer, ...]:
    """`count` embedded PostgreSQL servers `pg-1`..`pg-N`, all in pool `bench` (every tier's,
    then), on ports from `dev.postgres_port` up; the first also holds the metadata database.
    Room for every tenant a run makes, so only the fewest-tenants rule spreads them."""
    return tuple(
        DevServer(
            name=f"pg-{index + 1}",
            pool=BENCH_POOL,
            max_tenants=1_000_000,
            port=dev.postgres_port + index,
            port_variable="PLATFORM_DEV_POSTGRES_PORT" if index == 0 else "bench --servers",
            child="postgres" if index == 0 else f"postgres-{index + 1}",
        )
        for index in range(count)
    )


def bench_plan(
    work_dir: Path,
    extra_env: dict[str, str],
    service_transport: Transport = "http",
    servers: int = 1,
) -> Plan:
    """`make dev`'s plan with the benchmark's data folder and ports, production log format;
    the reference services are called over `service_transport`; tenants are placed on
    `servers` embedded servers (one: no PLATFORM_STORAGE_SERVERS, as an installation that
    never set it)."""
    dev = DevSettings(
        data_dir=work_dir,
        postgres_port=54339,
        # Unused (the benchmark's servers are bench_fleet's), but apart from make dev's too.
        dedicated_postgres_port=54338,
        temporal_port=7243,
        temporal_ui_port=8243,
        backend_port=8111,
        auth_port=8112,
        worker_metrics_port=9474,
        # Beside make dev's 4222, like every other port here.
        nats_port=4232,
        # Unused too (no Prometheus below), but apart from make dev's 9090.
        prometheus_port=9100,
        service_transport=service_transport,
    )
    plan = make_plan(dev, Settings(), bench_fleet(dev, servers))
    env = {**plan.env, "PLATFORM_LOG_FORMAT": "json", "PLATFORM_API_PORT": str(BENCH_API_PORT)}
    env.update(extra_env)
    # No Prometheus: its scrapes would be load on the 2 cores the figures are measured on, and
    # the figures are comparable with the runs before make dev had one.
    return dataclasses.replace(plan, api_port=BENCH_API_PORT, env=env, prometheus=None)


@contextmanager
def running_stack(
    work_dir: Path,
    *,
    fresh: bool = True,
    extra_env: dict[str, str] | None = None,
    service_transport: Transport = "http",
    servers: int = 1,
) -> Iterator[RunningStack]:
    """Start the stack in `work_dir` (emptied first when `fresh`) with `servers` storage
    servers, stop it on exit."""
    if fresh and work_dir.exists():
        shutil.rmtree(work_dir)
    plan = bench_plan(work_dir, extra_env or {}, service_transport, servers)
    stack = Stack(work_dir / "run", REPO_ROOT, log_dir=work_dir / "logs")
    try:
        _log.info("starting the stack in %s (logs in %s)", work_dir, stack.log_dir)
        start_stack(stack, plan)
        pids = {child.name: child.proc.pid for child in stack.children}
        yield RunningStack(plan, f"http://127.0.0.1:{plan.api_port}", pids, stack)
    finally:
        stack.stop_all()
