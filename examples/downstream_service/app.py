"""HTTP surface of the downstream service: `POST /internal/tenants/{id}/migrate`,
`DELETE /internal/tenants/{id}` and `/healthz`.

Every `/internal` route is the platform's alone: its bearer token is verified first (see
`auth.PlatformCallRoute`), then the Idempotency-Key header, then the body.

`DELETE /internal/tenants/{id}` is the teardown the platform calls when it purges a tenant,
before it drops the tenant's schema or database. Its body is the migrate body (the platform's
row may no longer say where the storage is), and it takes the migrate lock of the tenant. It
drops, without CASCADE and in one transaction, every object this service's role owns in the
tenant's schema (`public` of the tenant's database in DATABASE mode), its history table
included, and nothing another role owns: 200 `{"tenantId", "dropped": [names]}`. 404
(`nothing_to_tear_down`) when the schema or database is gone or holds nothing of this
service's, so a repeated call is a 404 that changes nothing; the platform counts 2xx and 404 as
done. 409 (`teardown_blocked`) when another role's object depends on one of ours; 503 while a
migration holds the lock. In DATABASE mode the service then closes its pool of that database, so
the platform's DROP DATABASE finds no connection of it.

The routes only check and hand over: the work is `calls.migrate_tenant` / `calls.teardown_tenant`,
which consumer mode (`consumer`, started by the lifespan when `DOWNSTREAM_EVENTS_URL` is set)
runs too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from psycopg_pool import ConnectionPool
from tenant_directory import TenantDirectory

from examples.downstream_service.answers import CommandAnswers
from examples.downstream_service.auth import (
    PlatformCall,
    PlatformCallRoute,
    TokenVerifier,
    build_verifier,
)
from examples.downstream_service.calls import (
    PlatformCalls,
    migrate_tenant,
    require_idempotency_key,
    teardown_tenant,
)
from examples.downstream_service.consumer import CommandConsumer
from examples.downstream_service.errors import (
    DownstreamError,
    install_error_handlers,
)
from examples.downstream_service.migrator import Migrator, load_migrations
from examples.downstream_service.models import (
    TENANT_ID_PATTERN,
    MigrateRequest,
    MigrateResponse,
    TeardownResponse,
)
from examples.downstream_service.pools import StoragePools
from examples.downstream_service.replay import SeenTokenIds, open_state_pool
from examples.downstream_service.replies import ReplySigner
from examples.downstream_service.runtime import runtime
from examples.downstream_service.settings import DownstreamSettings, get_settings

_log = logging.getLogger(__name__)


def _migrator(request: Request) -> Migrator:
    migrator: Migrator = request.app.state.migrator
    return migrator


def _settings(request: Request) -> DownstreamSettings:
    settings: DownstreamSettings = request.app.state.settings
    return settings


def _platform_call(request: Request) -> PlatformCall:
    call: PlatformCall = request.state.platform_call
    return call


def _idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> str:
    # A dependency rather than a required header parameter: a missing key is a 400 here, not
    # FastAPI's 422, and it is checked before the body is.
    return require_idempotency_key(key)


MigratorDep = Annotated[Migrator, Depends(_migrator)]
SettingsDep = Annotated[DownstreamSettings, Depends(_settings)]
IdempotencyKey = Annotated[str, Depends(_idempotency_key)]
PlatformCallDep = Annotated[PlatformCall, Depends(_platform_call)]
TenantIdPath = Annotated[str, PathParam(pattern=TENANT_ID_PATTERN)]

router = APIRouter()
# The Security dependency only documents the bearer scheme in OpenAPI; PlatformCallRoute checks.
internal = APIRouter(
    prefix="/internal",
    route_class=PlatformCallRoute,
    dependencies=[
        Security(HTTPBearer(auto_error=False, description="The platform's per-call JWT"))
    ],
)


@router.get("/healthz")
def healthz(settings: SettingsDep) -> dict[str, str]:
    """Liveness: the process answers (PostgreSQL is not checked)."""
    return {"status": "ok", "service": settings.service_name}


@internal.post("/tenants/{tenant_id}/migrate")
def migrate(
    tenant_id: TenantIdPath,
    body: MigrateRequest,
    idempotency_key: IdempotencyKey,
    call: PlatformCallDep,
    migrator: MigratorDep,
) -> MigrateResponse:
    """Apply this service's pending migrations to the tenant's storage.

    A plain `def`, so FastAPI runs the blocking database work in its thread pool.
    """
    return migrate_tenant(migrator, tenant_id, body, idempotency_key, call)


@internal.delete(
    "/tenants/{tenant_id}",
    responses={
        404: {"description": "The storage is gone or holds nothing of this service's: done"},
        409: {"description": "An object this service does not own depends on one it owns"},
    },
)
def teardown(
    tenant_id: TenantIdPath,
    body: MigrateRequest,
    idempotency_key: IdempotencyKey,
    call: PlatformCallDep,
    migrator: MigratorDep,
) -> TeardownResponse:
    """Drop this service's objects and migration history from the tenant's storage."""
    return teardown_tenant(migrator, tenant_id, body, idempotency_key, call)


async def _start_consumer(
    settings: DownstreamSettings,
    verifier: TokenVerifier,
    migrator: Migrator,
    state_pool: ConnectionPool[psycopg.Connection[Any]] | None,
) -> CommandConsumer | None:
    """Consumer mode beside HTTP when `DOWNSTREAM_EVENTS_URL` is set (None otherwise).

    A missing or unusable reply key stops the start-up; the bus being away does not: the
    consumer connects in the background until it can, while HTTP serves.
    """
    key_file = settings.require_reply_key()
    if key_file is None or settings.events_url is None:
        return None
    signer = await run_in_threadpool(
        lambda: ReplySigner(key_file, service_name=settings.service_name)
    )
    answers = CommandAnswers(
        state_pool,
        timeout=settings.connect_timeout,
        purge_interval=settings.seen_tokens_purge_interval,
    )
    if state_pool is not None:
        try:
            await run_in_threadpool(answers.prepare)
        except DownstreamError as exc:
            # Its first use tries again.
            _log.warning("command answers table not created at start-up: %s", exc.detail)
    consumer = CommandConsumer(
        url=settings.events_url,
        service_name=settings.service_name,
        calls=PlatformCalls(verifier, migrator),
        answers=answers,
        signer=signer,
        concurrency=settings.consumer_concurrency,
    )
    consumer.start()
    _log.info(
        "%s consumes commands; replies signed with %s (%s)",
        settings.service_name,
        key_file,
        signer.algorithm,
    )
    return consumer


@asynccontextmanager
async def _directory(settings: DownstreamSettings) -> AsyncIterator[TenantDirectory | None]:
    """The platform's tenant directory, when the settings name it."""
    if settings.directory_url is None or settings.directory_token is None:
        yield None
        return
    async with TenantDirectory(
        str(settings.directory_url).rstrip("/"),
        settings.directory_token.get_secret_value(),
        events_url=settings.directory_events_url,
        max_age=settings.directory_max_age,
    ) as directory:
        _log.info(
            "%s finds tenants through the directory at %s (%s)",
            settings.service_name,
            settings.directory_url,
            "following events" if settings.directory_events_url else "revalidating",
        )
        yield directory


def create_app(settings: DownstreamSettings | None = None) -> FastAPI:
    """Build the app; keys and migrations (built-in and extra folders) are read at start-up, the
    pools open lazily, and the platform's JWKS is fetched on the first call.

    Start-up fails (AuthNotConfigured) when the settings name no source of platform keys, and
    (FileNotFoundError, MigrationSetInvalid) when the migration folders make no valid set.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.consumer = None
        app.state.directory = None
        stack = AsyncExitStack()
        database_url = str(settings.database_url) if settings.database_url else None
        migrations = await run_in_threadpool(
            load_migrations, settings.migrations_path, settings.extra_migrations_dirs
        )
        state_pool = open_state_pool(
            database_url,
            application_name=settings.service_name,
            timeout=settings.connect_timeout,
            max_size=settings.pool_max_size,
        )
        seen = SeenTokenIds(
            state_pool,
            timeout=settings.connect_timeout,
            purge_interval=settings.seen_tokens_purge_interval,
        )
        pools = StoragePools(
            database_url=database_url,
            application_name=settings.service_name,
            connect_timeout=settings.connect_timeout,
            max_size=settings.pool_max_size,
            max_pools=settings.max_pools,
            max_idle=settings.pool_max_idle,
        )
        try:
            app.state.verifier = await run_in_threadpool(build_verifier, settings, seen)
            if state_pool is not None:
                try:
                    await run_in_threadpool(seen.prepare)
                except DownstreamError as exc:
                    # The first call tries again; until then calls answer 503.
                    _log.warning("state table not created at start-up: %s", exc.detail)
            app.state.settings = settings
            app.state.pools = pools
            app.state.migrator = Migrator(
                service_name=settings.service_name,
                migrations=migrations,
                pools=pools,
                lock_timeout=settings.lock_timeout,
            )
            app.state.consumer = await _start_consumer(
                settings, app.state.verifier, app.state.migrator, state_pool
            )
            app.state.directory = await stack.enter_async_context(_directory(settings))
            _log.info(
                "%s ready with migrations %s; platform tokens verified with %s",
                settings.service_name,
                ", ".join(app.state.migrator.migration_ids),
                settings.require_key_source(),
            )
            yield
        finally:
            await stack.aclose()
            consumer: CommandConsumer | None = app.state.consumer
            if consumer is not None:
                await consumer.stop()
            await run_in_threadpool(pools.close)
            if state_pool is not None:
                await run_in_threadpool(state_pool.close)

    app = FastAPI(title=settings.service_name, lifespan=lifespan)
    app.include_router(router)
    app.include_router(internal)
    app.include_router(runtime)
    install_error_handlers(app)
    return app


app = create_app()
