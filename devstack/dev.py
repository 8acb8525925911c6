"""`make dev`: the whole stack in the foreground, as `python -m devstack.dev`.

Starts what the environment does not already name (embedded PostgreSQL, the Temporal dev server,
the two reference downstream services), then the worker and the API (and Prometheus, scraping
both with the alert rules loaded, when a `prometheus` binary is on the PATH: devstack.prometheus),
and prints how to use it once `/readyz` answers, with ready-to-paste tokens of the development
identity provider (unless the environment names a real one). Two embedded PostgreSQL servers
hold tenant storage (PLATFORM_STORAGE_SERVERS): `pg-shared` (pool `shared`: BASIC and STANDARD
tenants, and the metadata database) and `pg-dedicated` (pool `dedicated`: PREMIUM tenants),
unless the environment names a fleet. Each gets the deployment's roles (devstack.roles): the
platform connects as `platform`, each reference service as its own role (`backend_service`,
`auth_service`), never as the superuser. Their passwords, one per role and server, are
generated once into the data folder; the embedded servers trust loopback connections, so they
do not check them, but every connection gives them as a real server needs: the platform's URLs
carry them, and each service finds its own per host in a libpq password file (`PGPASSFILE`,
devstack.passfile), as it would against a fleet of real servers.
Each reference service also reads extra migrations from `.devdata/migrations/<service-name>/`
(created empty; `DOWNSTREAM_EXTRA_MIGRATIONS_DIRS`), so a new migration dropped there is picked
up when the service restarts.
Ctrl-C or SIGTERM stops everything in reverse order.
`python -m devstack.dev service auth-service` runs one reference service alone, to bring it
back after an outage drill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import httpx
import psycopg
from pydantic import Field
from temporalio.client import Client

from api.auth import DIRECTORY_SCOPE, READ_SCOPE
from devstack import passfile
from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from devstack.prometheus import (
    HOW_TO_GET,
    DevPrometheus,
    alerts_url,
    find_binary,
    scrape_target,
    write_config,
)
from devstack.roles import Layout, Login, apply_layout, login_url, service_role
from devstack.supervisor import DevStackError, Interrupted, Stack
from devstack.temporal import dev_server_command
from devstack.tokens import DEV_ISSUER, OPERATOR_SCOPES, DevKeys, mint
from infra.security.keys import generate_private_key
from infra.temporal import exit_process
from tenancy.models import SlaTier
from tenancy.settings import Settings, get_settings, without_password

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = "Platform Service is up"
BANNER_TOKEN_TTL = timedelta(hours=12)
_log = logging.getLogger("devstack.dev")
PLATFORM_ROLE = "platform"
METADATA_DATABASE = "platform"
STORAGE_DATABASE = "tenants"
Port = Annotated[int, Field(ge=1, le=65535)]


class DevSettings(DevKeys):
    """Where `make dev` keeps its data (and keys), and the ports of what it embeds."""

    postgres_port: Port = 54329
    dedicated_postgres_port: Port = 54330
    temporal_port: Port = 7233
    temporal_ui_port: Port = 8233
    backend_port: Port = 8101
    auth_port: Port = 8102
    worker_metrics_port: Port = 9464
    nats_port: Port = 4222
    # make dev's Prometheus (devstack.prometheus), when a `prometheus` binary is on the PATH.
    prometheus_port: Port = 9090
    # How the platform calls the reference services: `events` sends them commands on the bus
    # (each answers with replies signed by a key of its own, made in the keys folder).
    service_transport: Literal["http", "events"] = "http"

    def service_reply_key_file(self, name: str) -> Path:
        """The key reference service `name` signs its replies with (transport events)."""
        return self.data_dir / "keys" / f"{name}-reply.pem"

    @property
    def passwords_file(self) -> Path:
        """The development roles' passwords, generated on the first run."""
        return self.data_dir / "postgres-passwords.json"

    def service_migrations_dir(self, name: str) -> Path:
        """The folder of extra migrations of reference service `name`."""
        return (self.data_dir / "migrations" / name).resolve()

    def service_ports(self) -> dict[str, tuple[int, str]]:
        """Each reference service's port and the variable that sets it."""
        return {
            "backend-service": (self.backend_port, "PLATFORM_DEV_BACKEND_PORT"),
            "auth-service": (self.auth_port, "PLATFORM_DEV_AUTH_PORT"),
        }


@dataclass(frozen=True)
class DevServer:
    """An embedded PostgreSQL server and the storage server it is in PLATFORM_STORAGE_SERVERS."""

    name: str
    pool: str
    max_tenants: int
    port: int
    # The variable that moves `port`, for the message when it is taken.
    port_variable: str
    # The supervised child's name, and its data folder's in the data folder.
    child: str
    # The tiers PLATFORM_PLACEMENT sends to this server's pool.
    tiers: tuple[SlaTier, ...] = ()


def dev_fleet(dev: DevSettings) -> tuple[DevServer, ...]:
    """`make dev`'s servers: the first also holds the metadata database."""
    return (
        DevServer(
            "pg-shared",
            "shared",
            1000,
            dev.postgres_port,
            "PLATFORM_DEV_POSTGRES_PORT",
            "postgres",
            (SlaTier.BASIC, SlaTier.STANDARD),
        ),
        DevServer(
            "pg-dedicated",
            "dedicated",
            50,
            dev.dedicated_postgres_port,
            "PLATFORM_DEV_DEDICATED_POSTGRES_PORT",
            "postgres-dedicated",
            (SlaTier.PREMIUM,),
        ),
    )


@dataclass(frozen=True)
class PlannedServer:
    """An embedded server to start and the roles and databases to give it."""

    spec: DevServer
    layout: Layout = field(repr=False)

    @property
    def address(self) -> str:
        """Its URL without user or database."""
        return f"postgresql://127.0.0.1:{self.spec.port}"


@dataclass(frozen=True)
class Plan:
    """What to embed and what every child is told, decided before anything starts."""

    dev: DevSettings
    api_port: int
    embed_postgres: bool
    embed_temporal: bool
    embed_services: bool
    # True when the API trusts the development identity provider, whose tokens the banner shows.
    dev_idp: bool
    audience: str
    # The worker's Prometheus endpoint when this run chose its address (host:port).
    worker_metrics: str | None
    env: dict[str, str] = field(repr=False)
    # The embedded PostgreSQL servers, the metadata database's first (none: not embedded).
    postgres: tuple[PlannedServer, ...] = ()
    # Each reference service's own database URL, as its own role without a password (it is in
    # the service's password file; embedded PostgreSQL only).
    service_database_urls: dict[str, str] = field(default_factory=dict, repr=False)
    # The lifecycle events' NATS server (unless PLATFORM_EVENTS_URL or another backend is set).
    embed_nats: bool = False
    # Prometheus scraping the API and the worker (None: no `prometheus` binary on the PATH).
    prometheus: DevPrometheus | None = None

    def postgres_dir(self, server: DevServer) -> Path:
        """The data folder of embedded server `server`."""
        return self.dev.data_dir / server.child

    def passfile(self, name: str) -> Path:
        """Reference service `name`'s libpq password file."""
        return self.dev.data_dir / "pgpass" / name

    def passfile_lines(self, name: str) -> list[str]:
        """One line per embedded server: service `name`'s role and its password there."""
        role = service_role(name)
        return [
            passfile.line("127.0.0.1", planned.spec.port, login)
            for planned in self.postgres
            for login in planned.layout.services
            if login.role == role
        ]

    def service_env(self, name: str | None = None) -> dict[str, str]:
        """The environment of reference service `name` (without a name, what all share).

        Each service verifies the platform's signed calls with the API's published keys
        (fetched on the first call, so the API may start after them). It connects as its own
        role to its own database; for a tenant it connects to the host in the tenant's
        `jdbcUrl` with the same role, its password for that host from its password file
        (PGPASSFILE). Against an external PostgreSQL, where `make dev`
        cannot create roles, it gets the platform's storage URL instead. Its extra migrations
        come from its folder in the data folder unless the environment names others."""
        storage = self.env.get("PLATFORM_STORAGE_DATABASE_URL") or self.env["PLATFORM_DATABASE_URL"]
        jwks = f"http://127.0.0.1:{self.api_port}/.well-known/jwks.json"
        own = self.service_database_urls.get(name, storage) if name else storage
        extra = [str(self.dev.service_migrations_dir(name))] if name else []
        passwords = (
            {"PGPASSFILE": str(self.passfile(name))} if name in self.service_database_urls else {}
        )
        return {
            "DOWNSTREAM_PLATFORM_JWKS_URL": jwks,
            **({"DOWNSTREAM_EXTRA_MIGRATIONS_DIRS": json.dumps(extra)} if extra else {}),
            **self.env,
            "DOWNSTREAM_DATABASE_URL": own,
            **passwords,
            **(self._consumer_env(name) if name else {}),
        }

    def _consumer_env(self, name: str) -> dict[str, str]:
        """With transport events, the service also takes its commands from the bus."""
        if self.dev.service_transport != "events":
            return {}
        return {
            "DOWNSTREAM_EVENTS_URL": self.env["PLATFORM_EVENTS_URL"],
            "DOWNSTREAM_REPLY_KEY_FILE": str(self.dev.service_reply_key_file(name)),
        }

    def required_ports(self) -> list[tuple[int, str]]:
        """Every port this run listens on, with the variable that moves it."""
        ports = [(self.api_port, "PLATFORM_API_PORT")]
        ports += [(p.spec.port, p.spec.port_variable) for p in self.postgres]
        if self.embed_nats:
            ports.append((self.dev.nats_port, "PLATFORM_DEV_NATS_PORT"))
        if self.embed_temporal:
            ports.append((self.dev.temporal_port, "PLATFORM_DEV_TEMPORAL_PORT"))
            ports.append((self.dev.temporal_ui_port, "PLATFORM_DEV_TEMPORAL_UI_PORT"))
        if self.embed_services:
            ports.extend(self.dev.service_ports().values())
        if self.worker_metrics is not None:
            ports.append((self.dev.worker_metrics_port, "PLATFORM_DEV_WORKER_METRICS_PORT"))
        if self.prometheus is not None:
            ports.append((self.prometheus.port, "PLATFORM_DEV_PROMETHEUS_PORT"))
        return ports


def dev_passwords(path: Path, roles: Sequence[str]) -> dict[str, str]:
    """The roles' passwords kept in `path` (owner-only), generating those missing."""
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [role for role in roles if role not in known]
    if missing:
        known.update({role: secrets.token_hex(16) for role in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(known, indent=2) + "\n")
    return {role: known[role] for role in roles}


def _password_key(server: int, role: str) -> str:
    # The first server's keys are the roles' names, as before there were more servers.
    return role if server == 0 else f"{role}@{server}"


def _plan_postgres(
    dev: DevSettings, fleet: Sequence[DevServer], services: Sequence[str]
) -> tuple[PlannedServer, ...]:
    """Every server's layout; each role has a password of its own on each server."""
    roles = [PLATFORM_ROLE, *(service_role(name) for name in services)]
    keys = [_password_key(index, role) for index in range(len(fleet)) for role in roles]
    passwords = dev_passwords(dev.passwords_file, keys)
    planned = []
    for index, server in enumerate(fleet):
        owner, *logins = (Login(role, passwords[_password_key(index, role)]) for role in roles)
        # Only the first holds the metadata database; the others, storage alone.
        metadata = METADATA_DATABASE if index == 0 else STORAGE_DATABASE
        planned.append(
            PlannedServer(server, Layout(metadata, STORAGE_DATABASE, owner, tuple(logins)))
        )
    return tuple(planned)


def _fleet_env(
    postgres: Sequence[PlannedServer], platform: Settings, environ: dict[str, str]
) -> dict[str, str]:
    """PLATFORM_STORAGE_SERVERS over the embedded servers, and PLATFORM_PLACEMENT by their
    tiers unless the environment sets it."""
    servers = [
        {
            "name": p.spec.name,
            "url": login_url(
                p.address, p.layout.platform or Login(PLATFORM_ROLE), STORAGE_DATABASE
            ),
            "pool": p.spec.pool,
            "maxTenants": p.spec.max_tenants,
        }
        for p in postgres
    ]
    env = {"PLATFORM_STORAGE_SERVERS": json.dumps(servers)}
    placement = {tier.value: p.spec.pool for p in postgres for tier in p.spec.tiers}
    if (
        placement
        and "placement" not in platform.model_fields_set
        and ("PLATFORM_PLACEMENT" not in environ)
    ):
        env["PLATFORM_PLACEMENT"] = json.dumps(placement)
    return env


def make_plan(
    dev: DevSettings, platform: Settings, fleet: Sequence[DevServer] | None = None
) -> Plan:
    """Export the embedded servers' addresses for whatever the environment leaves unset.

    `fleet` is the embedded PostgreSQL servers (default `make dev`'s two, `dev_fleet`); with
    more than one, and unless the environment names the storage database or servers, they
    are the storage servers. Otherwise only the first is embedded."""
    env = dict(os.environ)
    embed_postgres = platform.database_url is None
    # The setting has a default, so only the fields read from the environment tell whether
    # the operator named the services.
    embed_services = "downstream_services" not in platform.model_fields_set
    postgres: tuple[PlannedServer, ...] = ()
    service_urls: dict[str, str] = {}
    if embed_postgres:
        names = list(dev.service_ports()) if embed_services else []
        servers = list(fleet if fleet is not None else dev_fleet(dev))
        own_fleet = (
            platform.storage_database_url is None
            and "storage_servers" not in platform.model_fields_set
        )
        postgres = _plan_postgres(dev, servers if own_fleet else servers[:1], names)
        first = postgres[0]
        owner = first.layout.platform or Login(PLATFORM_ROLE)
        env["PLATFORM_DATABASE_URL"] = login_url(first.address, owner, METADATA_DATABASE)
        if platform.storage_database_url is None:
            env["PLATFORM_STORAGE_DATABASE_URL"] = login_url(first.address, owner, STORAGE_DATABASE)
        if len(postgres) > 1:
            env.update(_fleet_env(postgres, platform, env))
        # Without a password: each server's is in the service's password file.
        service_urls = {
            name: login_url(first.address, Login(service_role(name)), service_role(name))
            for name in names
        }
    embed_temporal = platform.temporal_address is None
    if embed_temporal:
        env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{dev.temporal_port}"
        # The console links each tenant's and rollout's run in the embedded server's Web UI.
        env.setdefault("PLATFORM_TEMPORAL_UI_URL", f"http://127.0.0.1:{dev.temporal_ui_port}")
    # The bus carries lifecycle events (backend nats) and the services' commands (transport
    # events), unless the environment names a server.
    embed_nats = "events_url" not in platform.model_fields_set and (
        platform.events_backend == "nats" or dev.service_transport == "events"
    )
    if embed_nats:
        env["PLATFORM_EVENTS_URL"] = f"nats://127.0.0.1:{dev.nats_port}"
    if embed_services:
        env["PLATFORM_DOWNSTREAM_SERVICES"] = json.dumps(
            [
                {
                    "name": name,
                    "baseUrl": f"http://127.0.0.1:{port}",
                    # Only where make dev created the role; an external server's are unknown.
                    **({"dbRole": service_role(name)} if name in service_urls else {}),
                    **(
                        {
                            "transport": "events",
                            "replyKeyFile": str(dev.service_reply_key_file(name)),
                        }
                        if dev.service_transport == "events"
                        else {}
                    ),
                }
                for name, (port, _) in dev.service_ports().items()
            ]
        )
    if platform.signing_key_file is None:
        env["PLATFORM_SIGNING_KEY_FILE"] = str(dev.signing_key_file)
    # Readable logs in a terminal; production keeps the JSON default.
    env.setdefault("PLATFORM_LOG_FORMAT", "console")
    # Deletions back a tenant up before dropping it; production chooses its own folder.
    if platform.deletion_backup_dir is None:
        env["PLATFORM_DELETION_BACKUP_DIR"] = str((dev.data_dir / "backups").resolve())
    worker_metrics = None
    metrics_address = platform.worker_metrics_address
    if metrics_address is None:
        worker_metrics = metrics_address = f"127.0.0.1:{dev.worker_metrics_port}"
        env["PLATFORM_WORKER_METRICS_ADDRESS"] = worker_metrics
    binary = find_binary()
    prometheus = (
        DevPrometheus(
            binary,
            dev.prometheus_port,
            dev.data_dir,
            api_target=f"127.0.0.1:{platform.api_port}",
            worker_target=scrape_target(metrics_address),
        )
        if binary is not None
        else None
    )
    dev_idp = platform.auth_jwks_url is None and platform.auth_public_key_file is None
    if dev_idp:
        env["PLATFORM_AUTH_PUBLIC_KEY_FILE"] = str(dev.idp_key_file)
        env["PLATFORM_AUTH_ISSUER"] = DEV_ISSUER
    return Plan(
        dev,
        platform.api_port,
        embed_postgres,
        embed_temporal,
        embed_services,
        dev_idp,
        platform.auth_audience,
        worker_metrics,
        env,
        postgres,
        service_urls,
        embed_nats,
        prometheus,
    )


def platform_settings() -> Settings:
    """The platform's settings as `make dev` reads them. A PLATFORM_PLACEMENT of the operator's
    without PLATFORM_STORAGE_SERVERS names make dev's pools, which the settings read here cannot
    know: the worker and the API check it against the servers make dev configures."""
    if "PLATFORM_PLACEMENT" not in os.environ or "PLATFORM_STORAGE_SERVERS" in os.environ:
        return get_settings()
    placement = os.environ.pop("PLATFORM_PLACEMENT")
    try:
        return Settings()
    finally:
        os.environ["PLATFORM_PLACEMENT"] = placement


def busy_ports(ports: Sequence[tuple[int, str]]) -> list[str]:
    """A message for each port something already listens on."""
    messages = []
    for port, variable in ports:
        with socket.socket() as sock:
            # As the servers themselves bind: a port held only by closed connections is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                messages.append(f"port {port} is in use: stop what holds it or set {variable}")
    return messages


def http_ok(url: str) -> bool:
    """`url` answers 200 (proxies ignored: everything here is on loopback)."""
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def temporal_answers(address: str) -> bool:
    """A client can connect to the frontend at `address`."""

    async def connect() -> None:
        await asyncio.wait_for(Client.connect(address), timeout=5)

    try:
        asyncio.run(connect())
    except (RuntimeError, OSError, TimeoutError):
        return False
    return True


def start_postgres(stack: Stack, plan: Plan, planned: PlannedServer) -> None:
    """One embedded server, plus its roles and databases (devstack.roles)."""
    name = planned.spec.name
    server = EmbeddedPostgres(plan.postgres_dir(planned.spec), planned.spec.port, durable=True)
    _log.info("starting PostgreSQL %s on 127.0.0.1:%d", name, server.port)
    try:
        server.start(timeout=60)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        server.stop()
        raise DevStackError(f"PostgreSQL {name} did not start: {exc}") from exc
    stack.adopt(planned.spec.child, server.process, essential=True, stop=server.stop)
    try:
        apply_layout(server.url, planned.layout)
    except psycopg.Error as exc:
        raise DevStackError(f"could not create the PostgreSQL roles on {name}: {exc}") from exc


def write_passfile(plan: Plan, name: str) -> None:
    """Reference service `name`'s password file, from the passwords its role has on each
    embedded server (none without embedded PostgreSQL)."""
    if name in plan.service_database_urls:
        passfile.write(plan.passfile(name), plan.passfile_lines(name))


def start_temporal(stack: Stack, plan: Plan) -> None:
    """The Temporal dev server persisting to `temporal.db`, once a client can connect."""
    dev = plan.dev
    _log.info("starting the Temporal dev server on 127.0.0.1:%d", dev.temporal_port)
    command = dev_server_command(
        dev.data_dir / "temporal.db", port=dev.temporal_port, ui_port=dev.temporal_ui_port
    )
    stack.spawn("temporal", command, plan.env, essential=True)
    address = plan.env["TEMPORAL_ADDRESS"]
    stack.wait_until("Temporal", lambda: temporal_answers(address), timeout=60)


def start_nats(stack: Stack, plan: Plan) -> None:
    """The NATS server with JetStream, its streams kept in the data folder."""
    server = EmbeddedNats(plan.dev.data_dir / "nats", plan.dev.nats_port)
    _log.info("starting NATS (JetStream) on 127.0.0.1:%d", server.port)
    try:
        server.start(timeout=30)
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        raise DevStackError(f"NATS did not start: {exc}") from exc
    stack.adopt("nats", server.process, essential=True, stop=server.stop)


def start_prometheus(stack: Stack, plan: Plan) -> None:
    """Prometheus with a configuration rendered into the data folder, once it is ready."""
    prometheus = plan.prometheus
    if prometheus is None:
        return
    write_config(prometheus)
    _log.info("starting Prometheus on 127.0.0.1:%d", prometheus.port)
    stack.spawn("prometheus", prometheus.command(), plan.env, essential=True)
    stack.wait_until("Prometheus", lambda: http_ok(f"{prometheus.url}/-/ready"), timeout=60)


def service_command(name: str, port: int) -> list[str]:
    """The reference downstream service `name` on loopback `port`."""
    options = ["--name", name, "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "examples.downstream_service", *options]


def spawn_service(stack: Stack, plan: Plan, name: str, *, essential: bool) -> None:
    """Reference service `name`, once its extra migrations folder (empty at first) and its
    password file exist."""
    port, _ = plan.dev.service_ports()[name]
    plan.dev.service_migrations_dir(name).mkdir(parents=True, exist_ok=True)
    write_passfile(plan, name)
    env = {**plan.service_env(name), **directory_env(plan, name)}
    stack.spawn(name, service_command(name, port), env, essential=essential)


def directory_env(plan: Plan, name: str) -> dict[str, str]:
    """How reference service `name` finds tenants for its runtime endpoints: the API's
    directory with a `directory:read` token of its own, following the lifecycle events when
    they go to NATS. Nothing when the API trusts another identity provider (no token to mint)."""
    if not plan.dev_idp:
        return {}
    token = mint(
        plan.dev.idp_key_file,
        subject=name,
        scopes=[DIRECTORY_SCOPE],
        audience=plan.audience,
        ttl=BANNER_TOKEN_TTL,
    )
    env = {
        "DOWNSTREAM_DIRECTORY_URL": f"http://127.0.0.1:{plan.api_port}",
        "DOWNSTREAM_DIRECTORY_TOKEN": token,
    }
    if plan.env.get("PLATFORM_EVENTS_BACKEND", "nats") == "nats":
        env["DOWNSTREAM_DIRECTORY_EVENTS_URL"] = plan.env.get(
            "PLATFORM_EVENTS_URL", "nats://127.0.0.1:4222"
        )
    return env


def start_stack(stack: Stack, plan: Plan) -> None:
    """Everything, in dependency order, until the API is ready."""
    plan.dev.data_dir.mkdir(parents=True, exist_ok=True)
    # Development keys are made once and kept with the data, so tokens survive a restart.
    generate_private_key(Path(plan.env["PLATFORM_SIGNING_KEY_FILE"]))
    if plan.dev_idp:
        generate_private_key(plan.dev.idp_key_file)
    if plan.embed_services and plan.dev.service_transport == "events":
        for name in plan.dev.service_ports():
            generate_private_key(plan.dev.service_reply_key_file(name))
    for planned in plan.postgres:
        start_postgres(stack, plan, planned)
    if plan.embed_temporal:
        start_temporal(stack, plan)
    if plan.embed_nats:
        start_nats(stack, plan)
    probes = [f"http://127.0.0.1:{plan.api_port}/readyz"]
    if plan.embed_services:
        for name, (port, _) in plan.dev.service_ports().items():
            _log.info("starting %s on 127.0.0.1:%d", name, port)
            spawn_service(stack, plan, name, essential=False)
            probes.append(f"http://127.0.0.1:{port}/healthz")
    _log.info("starting the worker")
    stack.spawn("worker", [sys.executable, "worker.py"], plan.env, essential=True)
    _log.info("starting the API on 127.0.0.1:%d", plan.api_port)
    # PLATFORM_API_WORKERS processes, with the request head limits (api/serve.py).
    api = ["-m", "api.serve", "--host", "127.0.0.1", "--port", str(plan.api_port)]
    stack.spawn("api", [sys.executable, *api], plan.env, essential=True)
    stack.wait_until(
        "the API and the services", lambda: all(http_ok(url) for url in probes), timeout=90
    )
    start_prometheus(stack, plan)


@dataclass(frozen=True)
class DevTokens:
    """The banner's tokens: an operator's (every scope), a viewer's (tenants: read only) and a
    service's (directory: read only, what another service reads tenants' locations with)."""

    operator: str
    viewer: str
    service: str


def dev_tokens(plan: Plan) -> DevTokens | None:
    """Fresh tokens of the development identity provider, if the API trusts it."""
    if not plan.dev_idp:
        return None
    key = plan.dev.idp_key_file
    audience = plan.audience
    return DevTokens(
        operator=mint(
            key,
            subject="operator",
            scopes=list(OPERATOR_SCOPES),
            audience=audience,
            ttl=BANNER_TOKEN_TTL,
        ),
        viewer=mint(
            key, subject="viewer", scopes=[READ_SCOPE], audience=audience, ttl=BANNER_TOKEN_TTL
        ),
        service=mint(
            key,
            subject="directory-client",
            scopes=[DIRECTORY_SCOPE],
            audience=audience,
            ttl=BANNER_TOKEN_TTL,
        ),
    )


def _events_line(plan: Plan) -> str:
    """Where the outbox relay publishes, as the banner shows it."""
    backend = plan.env.get("PLATFORM_EVENTS_BACKEND", "nats")
    if backend == "none":
        return "off (PLATFORM_EVENTS_BACKEND=none; the outbox still records)"
    url = plan.env.get("PLATFORM_EVENTS_URL", "nats://127.0.0.1:4222")
    shown = without_password(url)
    return f"{shown} ({'NATS JetStream' if backend == 'nats' else backend})"


def _prometheus_line(plan: Plan) -> str:
    """Where the alerts are, or how to get Prometheus."""
    if plan.prometheus is None:
        return f"  Prometheus        not started: {HOW_TO_GET}"
    url = plan.prometheus.url
    return f"  Prometheus        {url}   (alerts: {alerts_url(url)})"


def _storage_lines(plan: Plan) -> list[str]:
    """The embedded storage servers, with their pools and tiers, when there are several."""
    if "PLATFORM_STORAGE_SERVERS" not in plan.env or len(plan.postgres) < 2:
        return []
    width = max(len(p.spec.name) for p in plan.postgres)
    lines = []
    for index, planned in enumerate(plan.postgres):
        spec = planned.spec
        tiers = f" ({', '.join(t.value for t in spec.tiers)})" if spec.tiers else ""
        label = "Storage servers" if index == 0 else ""
        lines.append(
            f"  {label:<18}{spec.name:<{width}}  127.0.0.1:{spec.port}  pool {spec.pool}{tiers}"
        )
    return lines


def banner(plan: Plan, tokens: DevTokens | None) -> str:
    """How to reach and use the running stack."""
    api = f"http://127.0.0.1:{plan.api_port}"
    dev = plan.dev
    ui = f"http://127.0.0.1:{dev.temporal_ui_port}" if plan.embed_temporal else None
    body = '{"id": "acme", "name": "Acme Corp", "storageMode": "SCHEMA", "slaTier": "STANDARD"}'
    hours = int(BANNER_TOKEN_TTL.total_seconds() // 3600)
    if tokens is not None:
        auth = [
            f"Tokens (development identity provider, valid {hours} h): paste into your shell.",
            f"Operator ({' '.join(OPERATOR_SCOPES)}), read-only viewer ({READ_SCOPE}) "
            f"and a service reading the tenant directory ({DIRECTORY_SCOPE}):",
            f"  export TOKEN={tokens.operator}",
            f"  export READ_TOKEN={tokens.viewer}",
            f"  export SERVICE_TOKEN={tokens.service}",
            "  export PLATFORM_TOKEN=$TOKEN   # platformctl's token",
            "More tokens (any subject and scopes):",
            f'  export ALICE_TOKEN=$(make -s token SUB=alice SCOPES="{READ_SCOPE}")',
        ]
    else:
        auth = [
            "The API trusts your identity provider: put one of its tokens in TOKEN",
            f"(scopes {' '.join(OPERATOR_SCOPES)}), one with {READ_SCOPE} in READ_TOKEN",
            f"and one with {DIRECTORY_SCOPE} in SERVICE_TOKEN.",
        ]
    bearer = '-H "Authorization: Bearer $TOKEN"'
    lines = [
        "",
        f"{READY_MARKER} at {api}",
        "",
        f"  Console           {api}/console   (sign in with $TOKEN below)",
        f"  API               {api}",
        f"  API docs          {api}/docs",
        f"  Temporal Web UI   {ui or '(external Temporal)'}",
        f"  API metrics       {api}/metrics",
        *(
            [f"  Worker metrics    http://{plan.worker_metrics}/metrics"]
            if plan.worker_metrics
            else []
        ),
        _prometheus_line(plan),
        f"  Lifecycle events  {_events_line(plan)}",
        *(
            ["  Service calls     commands on the bus (PLATFORM_DEV_SERVICE_TRANSPORT=events)"]
            if plan.embed_services and dev.service_transport == "events"
            else []
        ),
        *_storage_lines(plan),
        f"  Data folder       {dev.data_dir}",
        "",
        *auth,
        "",
        "Provision a tenant:",
        f"  curl -s -X POST {api}/api/tenants {bearer} "
        f"-H 'Content-Type: application/json' -d '{body}'",
        "Watch it, then read its audit trail:",
        f"  curl -s {api}/api/tenants/acme {bearer}",
        f'  curl -s {api}/api/tenants/acme/events -H "Authorization: Bearer $READ_TOKEN"',
        "Where a service finds it (the tenant directory):",
        f'  curl -si {api}/api/tenants/acme/location -H "Authorization: Bearer $SERVICE_TOKEN"',
    ]
    if plan.embed_services:
        pid_file = dev.data_dir / "run" / "auth-service.pid"
        lines += [
            "Simulate an auth-service outage, then bring it back in another terminal:",
            f"  kill $(cat {pid_file})",
            "  "
            + (
                "PLATFORM_DEV_SERVICE_TRANSPORT=events "
                if dev.service_transport == "events"
                else ""
            )
            + "make service NAME=auth-service",
        ]
    lines += ["", "Ctrl-C stops everything; the data stays for the next run.", ""]
    return "\n".join(lines)


def run(ports: Sequence[tuple[int, str]], run_dir: Path, start: Callable[[Stack], None]) -> int:
    """Check ports, start, supervise, stop. 0 after a requested stop, else non-zero."""
    busy = busy_ports(ports)
    for message in busy:
        _log.error("%s", message)
    if busy:
        if any(run_dir.glob("*.pid")):
            _log.error("a previous run may still be going: see the pid files in %s", run_dir)
        return 2
    stack = Stack(run_dir, REPO_ROOT)
    stack.install_signal_handlers()
    try:
        start(stack)
        stack.supervise()
        _log.info("stopping")
        return 0
    except Interrupted:
        _log.info("interrupted during start-up; stopping")
        return 0
    except DevStackError as exc:
        _log.error("%s; stopping the rest", exc)
        return 1
    finally:
        stack.stop_all()


def run_stack(plan: Plan) -> int:
    """The whole stack, with the banner once it is ready."""

    def start(stack: Stack) -> None:
        start_stack(stack, plan)
        sys.stdout.write(banner(plan, dev_tokens(plan)))
        sys.stdout.flush()

    return run(plan.required_ports(), plan.dev.data_dir / "run", start)


def run_service(plan: Plan, name: str) -> int:
    """One reference service, given what the whole stack would give it."""
    port, variable = plan.dev.service_ports()[name]
    url = f"http://127.0.0.1:{port}"

    def start(stack: Stack) -> None:
        spawn_service(stack, plan, name, essential=True)
        stack.wait_until(name, lambda: http_ok(f"{url}/healthz"), timeout=60)
        _log.info("%s is up at %s; Ctrl-C stops it", name, url)

    return run([(port, variable)], plan.dev.data_dir / "run", start)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devstack.dev [service NAME]`."""
    parser = argparse.ArgumentParser(prog="python -m devstack.dev", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    one = commands.add_parser("service", help="run one reference downstream service")
    one.add_argument("name", choices=["backend-service", "auth-service"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s devstack: %(message)s"
    )
    # Readiness polling would log every probe.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = make_plan(DevSettings(), platform_settings())
    if args.command == "service":
        return run_service(plan, args.name)
    return run_stack(plan)


if __name__ == "__main__":
    exit_process(main())
