"""Configuration from the environment, one typed object for the API, the worker and tests."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PostgresDsn,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenancy.dsn import check_tcp_dsn, without_password
from tenancy.fleet import DEFAULT_POOL, DEFAULT_SERVER, StorageServer
from tenancy.models import SlaTier

__all__ = ["check_tcp_dsn", "without_password"]

TASK_QUEUE = "platform-tenants"
# The capacity of the implicit `default` server (and the largest `maxTenants`).
UNBOUNDED_TENANTS = 10_000_000


def _seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except OverflowError:
            raise ValueError(f"{value} seconds is out of range") from None
    return value


Seconds = Annotated[timedelta, BeforeValidator(_seconds), Field(gt=timedelta(0))]


# A plain, unquoted-safe PostgreSQL role name (63 bytes at most).
DB_ROLE_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
# Names PostgreSQL reads as something other than one role even when quoted: `public` is every
# role (a grant to it would open every tenant to everyone), `none` is refused, and `pg_` is
# reserved for the server's predefined roles.
_RESERVED_ROLES = frozenset({"public", "none"})


def _grantable_role(value: str | None) -> str | None:
    if value is not None and (value in _RESERVED_ROLES or value.startswith("pg_")):
        raise ValueError(f"{value!r} is not a role of its own: choose another dbRole")
    return value


class DownstreamService(BaseModel):
    """A service that runs its own migrations for each new tenant: one entry of
    `PLATFORM_DOWNSTREAM_SERVICES`, its keys in camelCase (`baseUrl`, `dbRole`).

    `transport` says how its migrate and teardown calls reach it: `http` (the default) calls
    its internal endpoints at `baseUrl`; `events` publishes commands on the bus and waits for
    its signed replies (see `infra.events.commands`).
    """

    # A refused baseUrl may carry a password: the error names the field, not the value.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,
        use_attribute_docstrings=True,
    )

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    """The service's name, unique among the services: it names the service's migration task
    queue, its command subject (`platform.commands.<name>`) and the service in rollouts."""
    base_url: AnyHttpUrl | None = None
    """Where its internal migrate and teardown endpoints are (required with transport `http`)."""
    db_role: Annotated[
        str | None, Field(pattern=DB_ROLE_PATTERN), AfterValidator(_grantable_role)
    ] = None
    """The PostgreSQL role the service connects to tenant storage with (63 bytes at most, not
    `public`, `none` or `pg_*`, none shared by two services); the platform grants it what it
    needs on each new schema or database. Unset: nothing is granted, so the service only works
    with credentials that own the storage already."""
    transport: Literal["http", "events"] = "http"
    """How its migrate and teardown calls reach it: `http` calls its endpoints at `baseUrl`;
    `events` publishes commands on the bus (`platform.commands.<name>`, NATS only) and waits
    for its signed replies."""
    reply_key_file: Path | None = None
    """The public half (PEM) of the key its replies are signed with; transport `events` needs
    this or `replyKeyFiles`."""
    reply_key_files: tuple[Path, ...] = ()
    """Further public keys its replies may be signed with: several while the service rolls its
    key."""

    @model_validator(mode="after")
    def _reachable(self) -> DownstreamService:
        if self.transport == "http" and self.base_url is None:
            raise ValueError(f"service {self.name!r} needs a baseUrl (transport http)")
        if self.transport == "events" and not self.reply_key_paths:
            raise ValueError(
                f"service {self.name!r} has transport events and needs a replyKeyFile (or "
                "replyKeyFiles): the public keys that verify its signed replies"
            )
        return self

    @property
    def reply_key_paths(self) -> tuple[Path, ...]:
        """Every file of a key its replies may be signed with."""
        first = () if self.reply_key_file is None else (self.reply_key_file,)
        return first + self.reply_key_files

    @property
    def over_events(self) -> bool:
        """Whether its calls go over the bus as commands."""
        return self.transport == "events"

    def describe(self) -> str:
        """Where its calls go, for logs."""
        if self.over_events:
            return f"events: platform.commands.{self.name}"
        return without_password(str(self.base_url))


DEFAULT_DOWNSTREAM_SERVICES = (
    DownstreamService(name="backend-service", base_url=AnyHttpUrl("http://127.0.0.1:8101")),
    DownstreamService(name="auth-service", base_url=AnyHttpUrl("http://127.0.0.1:8102")),
)


class Settings(BaseSettings):
    """Every knob of the service. Unset database/Temporal URLs mean the embedded servers."""

    # Errors name the setting and the rule, never the value: a refused URL (and a model-level
    # error, which carries every value) may hold a password, and the error ends up in a log.
    model_config = SettingsConfigDict(
        env_prefix="PLATFORM_",
        extra="ignore",
        hide_input_in_errors=True,
        use_attribute_docstrings=True,
    )

    database_url: PostgresDsn | None = None
    """PostgreSQL for the platform's metadata, `postgresql://user:password@host:port/db`. One
    TCP host: Unix-socket and multi-host URLs are refused, because jdbcUrls are built from host
    and port. Unset: the embedded server `make dev` and the tests start."""
    storage_database_url: PostgresDsn | None = None
    """PostgreSQL where tenant schemas and databases are created (the role needs CREATE and
    CREATEDB). Unset: the metadata database."""
    storage_servers: tuple[StorageServer, ...] = ()
    """The storage servers tenants are placed on (tenancy.fleet), as a JSON list of objects
    (the table below); a server that tenants live on must stay in the list, or the API and the
    worker refuse to start. Unset: one server `default` in pool `default` at the storage
    database URL, with no cap, every tier there."""
    placement: dict[SlaTier, str] = Field(default_factory=dict)
    """The pool each SLA tier's tenants go to, a JSON object such as
    `{"BASIC": "shared", "PREMIUM": "dedicated"}`; a pool without a server is refused at start.
    A tier left out goes to the first server's pool."""
    storage_check_interval: Seconds = timedelta(seconds=15)
    """How often the worker checks that each storage server answers (`reachable`, `checkedAt`
    and `serverVersion` of GET /api/storage-servers; the `platform_storage_server_*` gauges)."""
    api_port: int = Field(default=8000, ge=1, le=65535)
    """The API's port (`make dev`, `python -m api.serve`)."""
    api_workers: int = Field(default=1, ge=1, le=64)
    """uvicorn worker processes serving the API (`python -m api.serve`); /metrics adds them
    up."""
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """The largest request body the API reads (larger: 413); a tenant spec is a few hundred
    bytes."""
    downstream_services: tuple[DownstreamService, ...] = DEFAULT_DOWNSTREAM_SERVICES
    """The services that run their own migrations for each new tenant, as a JSON list of
    objects (the table below), names and dbRoles unique."""
    migration_max_attempts: int = Field(default=5, ge=1, le=100)
    """Failed calls that reached a service (or timed out talking to it) before the tenant is
    MIGRATION_ERROR; the platform's own failures do not count."""
    # Durations are plain seconds in the environment (e.g. PLATFORM_MIGRATION_INITIAL_INTERVAL=0.5).
    migration_initial_interval: Seconds = timedelta(seconds=1)
    """The first delay before a migration call is retried (it doubles each attempt); not above
    the longest delay."""
    migration_max_interval: Seconds = timedelta(seconds=30)
    """The longest delay between two attempts of a migration call."""
    migration_timeout: Seconds = timedelta(seconds=60)
    """Bounds one migration call, so a hung service or a dead worker shows within this time."""
    migration_schedule_to_start: Seconds = timedelta(minutes=5)
    """How long a migration call waits on its service's task queue for a worker before the
    attempt fails (MIGRATION_ERROR naming the queue): a queue a deploy left unpolled."""
    create_timeout: Seconds = timedelta(seconds=15)
    """How long POST waits for the workflow to record the tenant row before answering 503."""
    task_queue: str = TASK_QUEUE
    """The task queue of the worker and the API."""
    # 32 rather than 16: 1.5x the tenants/s of a no-op rollout over 1,000 tenants here, 1.6x of
    # an apply, worker RSS 155 MiB instead of 150 (bench/results/fleet-rollouts/NOTES.md).
    rollout_concurrency: int = Field(default=32, ge=1, le=256)
    """Fleet rollouts: tenants called at once per rollout (per batch activity); a rollout's
    default `concurrency`."""
    rollout_max_failure_ratio: float = Field(default=0.05, ge=0, le=1)
    """Fleet rollouts: the share of a wave's finished tenants that may fail before the rollout
    halts itself; a rollout's default `maxFailureRatio`."""
    deletion_grace_period: Seconds = timedelta(days=7)
    """Offboarding: how long a deleted tenant can be restored before its data is purged (the
    default of DELETE's graceSeconds)."""
    deletion_backup_dir: Path | None = None
    """Offboarding: where each tenant's storage is dumped before it is dropped (unset: no
    backup). The folder is the worker's; it is created if missing."""
    deletion_backup_timeout: Seconds = timedelta(minutes=30)
    """Bounds one pg_dump, so a hung dump shows as a failed (retryable) backup."""
    move_source_retention: Seconds = timedelta(hours=1)
    """Moves between storage servers: a moved tenant's frozen source is dropped this long after
    the switch (a way back while it lasts)."""
    move_copy_timeout: Seconds = timedelta(hours=2)
    """Moves between storage servers: bounds one copy (pg_dump and pg_restore)."""
    max_concurrent_storage_creations: int = Field(default=4, ge=1, le=64)
    """Per tenant storage server and worker process: a burst of provisionings queues for these
    slots instead of exhausting the server's connections (see infra.limits)."""
    max_concurrent_migrations: int = Field(default=8, ge=1, le=256)
    """Per downstream service and worker process: the slots of the worker on the service's own
    migration task queue (see worker.build_worker)."""
    migration_queue_activities_per_second: float | None = Field(default=None, gt=0)
    """Migration calls per second that the Temporal server hands out from each service's task
    queue, across all workers (unset: no rate, only the per-worker cap above)."""
    worker_max_cached_workflows: int = Field(default=1000, ge=0, le=100_000)
    """Workflow runs a worker keeps in memory between tasks (the SDK's sticky cache). Fewer
    bound the worker's memory when many tenants are in flight; an evicted run is replayed from
    its history at its next task, which costs CPU."""

    events_backend: Literal["nats", "kafka", "none"] = "nats"
    """Lifecycle events (infra.events): the bus the worker's outbox relay publishes to. `none`:
    no relay; the outbox still records."""
    events_url: str = "nats://127.0.0.1:4222"
    """Where the bus is: `nats://host:port`, or `kafka://host:port[,host:port]` (services with
    transport `events` need NATS). `make dev` and the tests embed NATS unless it is set."""
    events_source: str = Field(default="/platform-service", min_length=1)
    """The CloudEvents `source` the relay stamps on every event."""
    events_retention: Seconds = timedelta(days=7)
    """Published outbox events and settled commands are deleted (by the worker) once this
    old."""
    events_stream_max_age: Seconds = timedelta(days=7)
    """The `max_age` the PLATFORM_EVENTS stream is created with; a stream that exists keeps the
    limits it has (an operator's)."""
    events_stream_max_bytes: int = Field(default=1024**3, ge=-1)
    """The `max_bytes` the PLATFORM_EVENTS stream is created with (-1: none; JetStream drops the
    oldest events beyond it); a stream that exists keeps the limits it has."""

    auth_jwks_url: AnyHttpUrl | None = None
    """API authentication: the identity provider's JWKS that verifies bearer JWTs. With neither
    this nor a public key file configured the API refuses to start."""
    auth_public_key_file: Path | None = None
    """API authentication (development): a local PEM public key that verifies bearer JWTs."""
    auth_issuer: str | None = None
    """The `iss` every token must carry (checked when set)."""
    auth_audience: str = "platform-service"
    """The `aud` every token must carry."""
    auth_algorithms: tuple[Literal["RS256", "ES256"], ...] = ("RS256", "ES256")
    """The JWS algorithms accepted (a JSON list)."""

    signing_key_file: Path | None = None
    """Signed calls to downstream services: the platform's private key (EC P-256 or RSA PEM);
    the API only needs its public half. The worker cannot call services without it."""
    # During a rotation, keys are published before they sign, so that verifiers can fetch them
    # before the first token signed with them arrives.
    signing_next_key_files: tuple[Path, ...] = ()
    """Keys the JWKS also publishes during a rotation, not used to sign yet (a JSON list)."""
    signing_previous_key_files: tuple[Path, ...] = ()
    """Keys the JWKS still publishes after a rotation, no longer used, still valid for tokens
    signed before the switch (a JSON list)."""
    downstream_token_ttl: Seconds = timedelta(minutes=5)
    """The lifetime of a downstream call's token."""

    log_format: Literal["json", "console"] = "json"
    """Observability: logs are JSON unless `console`."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The lowest level logged."""
    worker_metrics_address: str | None = None
    """`host:port` of the worker's Prometheus endpoint (/metrics); off unless an address is
    given. Tracing follows the standard OTEL_* variables."""
    temporal_address: str | None = Field(default=None, validation_alias="TEMPORAL_ADDRESS")
    """The Temporal frontend. The connection itself is configured through the SDK's TEMPORAL_*
    variables (see infra.temporal); the address is read here only to know whether to embed a
    dev server (unset: one on 127.0.0.1:7233)."""
    temporal_ui_url: AnyHttpUrl | None = None
    """The Temporal Web UI, for the console's links to a tenant's or a rollout's run (`make
    dev` sets its own); no links without it."""

    @field_validator("database_url", "storage_database_url", mode="before")
    @classmethod
    def _tcp_server(cls, url: object, info: ValidationInfo) -> object:
        # Before pydantic's URL parsing, whose "empty host" would not say why.
        if isinstance(url, str):
            return check_tcp_dsn(url, f"PLATFORM_{str(info.field_name).upper()}")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [s.name for s in self.downstream_services]
        if len(names) != len(set(names)):
            raise ValueError("PLATFORM_DOWNSTREAM_SERVICES has duplicate service names")
        roles = self.service_db_roles()
        if len(roles) != len(set(roles)):
            # A shared role could read and rewrite the other service's tables.
            raise ValueError("PLATFORM_DOWNSTREAM_SERVICES has services sharing a dbRole")
        if self.events_services() and not self.events_url.startswith(("nats://", "tls://")):
            raise ValueError(
                "services with transport events take their commands over NATS JetStream: "
                "PLATFORM_EVENTS_URL must be a nats:// URL"
            )
        self._check_fleet()
        if self.migration_initial_interval > self.migration_max_interval:
            # Temporal rejects such a retry policy only when the activity is scheduled.
            raise ValueError(
                "PLATFORM_MIGRATION_INITIAL_INTERVAL must not exceed "
                "PLATFORM_MIGRATION_MAX_INTERVAL"
            )
        key_files = [
            *([self.signing_key_file] if self.signing_key_file else []),
            *self.signing_next_key_files,
            *self.signing_previous_key_files,
        ]
        if len(key_files) != len(set(key_files)):
            raise ValueError(
                "PLATFORM_SIGNING_KEY_FILE, PLATFORM_SIGNING_NEXT_KEY_FILES and "
                "PLATFORM_SIGNING_PREVIOUS_KEY_FILES must name different files: a key is "
                "next, current or previous, one at a time"
            )
        return self

    def _check_fleet(self) -> None:
        names = [s.name for s in self.storage_servers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"PLATFORM_STORAGE_SERVERS names {', '.join(duplicates)} more than once: "
                "a server's name is how tenants refer to it"
            )
        pools = {s.pool for s in self.storage_servers} if self.storage_servers else {DEFAULT_POOL}
        for tier, pool in self.placement.items():
            if pool not in pools:
                raise ValueError(
                    f"PLATFORM_PLACEMENT sends {tier.value} tenants to pool {pool!r}, which no "
                    f"server in PLATFORM_STORAGE_SERVERS is in (pools: {', '.join(sorted(pools))})"
                )

    def storage_fleet(self) -> tuple[StorageServer, ...]:
        """The storage servers, in configuration order: `PLATFORM_STORAGE_SERVERS`, or one
        server `default` (pool `default`) at the storage database URL, which holds every tenant
        an installation had before servers were configured. Its capacity is unbounded."""
        if self.storage_servers:
            return self.storage_servers
        return (
            StorageServer(
                name=DEFAULT_SERVER,
                url=self.require_storage_database_url(),
                pool=DEFAULT_POOL,
                max_tenants=UNBOUNDED_TENANTS,
            ),
        )

    def pool_of(self, tier: SlaTier) -> str:
        """The pool a tier's tenants are placed in: `PLATFORM_PLACEMENT`'s, else the first
        server's pool."""
        if tier in self.placement:
            return self.placement[tier]
        return self.storage_servers[0].pool if self.storage_servers else DEFAULT_POOL

    def placement_map(self) -> dict[SlaTier, str]:
        """Every tier's pool."""
        return {tier: self.pool_of(tier) for tier in SlaTier}

    def service_db_roles(self) -> tuple[str, ...]:
        """The services' storage roles, in configuration order (services without one omitted)."""
        return tuple(s.db_role for s in self.downstream_services if s.db_role is not None)

    def events_services(self) -> tuple[DownstreamService, ...]:
        """The services whose calls go over the bus (transport events)."""
        return tuple(s for s in self.downstream_services if s.over_events)

    def require_database_url(self) -> str:
        """The metadata database URL; the embedded server sets it before anything connects."""
        if self.database_url is None:
            raise RuntimeError(
                "PLATFORM_DATABASE_URL is not set: start the stack with `make dev`, "
                "or point it at a PostgreSQL server"
            )
        return str(self.database_url)

    def require_signing_key_file(self) -> Path:
        """The platform's private signing key; the worker cannot call services without it."""
        if self.signing_key_file is None:
            raise RuntimeError(
                "PLATFORM_SIGNING_KEY_FILE is not set: downstream calls must be signed "
                "(`make dev` generates a development key)"
            )
        return self.signing_key_file

    def require_storage_database_url(self) -> str:
        """Where tenant schemas and databases are created; defaults to the metadata database."""
        if self.storage_database_url is not None:
            return str(self.storage_database_url)
        return self.require_database_url()


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process; tests call ``get_settings.cache_clear()`` to override."""
    return Settings()
