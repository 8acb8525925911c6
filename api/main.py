"""FastAPI application factory. Entry point: `python -m api.serve` (api/serve.py: uvicorn with
the request head limits of api/limits.py, in `PLATFORM_API_WORKERS` processes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool

from api.auth import TokenVerifier
from api.console.app import install_console
from api.deps import AppState
from api.docs import install_docs
from api.errors import install_error_handlers
from api.gateway import WorkflowGateway
from api.limits import install_request_limits
from api.metrics import install_metrics
from api.openapi import install_openapi
from api.routes.admin import admin_router
from api.routes.deletion import deletion_router
from api.routes.directory import directory_router
from api.routes.drains import drains_router
from api.routes.health import health_router
from api.routes.jwks import router as jwks_router
from api.routes.moves import moves_router
from api.routes.rollouts import rollouts_router
from api.routes.services import services_router
from api.routes.stats import stats_router
from api.routes.storage_servers import storage_servers_router
from api.routes.tenants import tenants_router
from infra.db.console_sessions import ConsoleSignOuts
from infra.db.deletions import DeletionRepository
from infra.db.directory import DirectoryRepository
from infra.db.drains import DrainRepository
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.db.schema import apply_platform_migrations
from infra.db.server_checks import refuse_missing_servers
from infra.db.servers import ServerRepository
from infra.db.services import ServiceVersions
from infra.db.tenant_moves import MoveRepository
from infra.events.nats import BusProbe, StreamPosition
from infra.security.signing import jwks_document
from infra.telemetry.logging import configure_logging
from infra.telemetry.tracing import (
    client_interceptors,
    instrument_fastapi,
    shutdown_tracing,
    tracer_provider_from_env,
)
from infra.temporal import connect_client
from tenancy.settings import Settings, get_settings

_log = logging.getLogger("platform.api")


def create_app(
    settings: Settings | None = None, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the app; resources are created in its lifespan, not here.

    Without explicit `settings` the app reads its environment and configures the process's
    logging and tracing itself (the `uvicorn api.main:app` case); tests pass their own.
    """
    if settings is None and tracer_provider is None:
        tracer_provider = tracer_provider_from_env("platform-api")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        config = settings or get_settings()
        if settings is None:
            configure_logging(config)
        # First: an API that cannot authenticate anyone must not come up at all.
        verifier = TokenVerifier.from_settings(config)
        database_url = config.require_database_url()
        # The API publishes only public keys: a public key file is enough here.
        jwks = jwks_document(
            config.require_signing_key_file(),
            previous_key_files=config.signing_previous_key_files,
            next_key_files=config.signing_next_key_files,
        )
        await asyncio.to_thread(apply_platform_migrations, database_url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url, open=False, min_size=1, max_size=10, timeout=5
        )
        await pool.open()
        # The GETs of one statement (a tenant, a location): autocommit, so a read ends without a
        # COMMIT round trip. Separate, so no write ever runs outside its transaction.
        reads: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url,
            open=False,
            min_size=1,
            max_size=10,
            timeout=5,
            kwargs={"autocommit": True},
        )
        # Only a deployment whose services take commands over the bus needs it to be ready.
        command_bus = BusProbe(config.events_url) if config.events_services() else None
        # Connected on the directory's first listing, not here: the API serves without NATS.
        events_position = (
            StreamPosition(config.events_url) if config.events_backend == "nats" else None
        )
        try:
            await reads.open()
            # Refused before serving: a server list that forgot a server tenants live on.
            servers = ServerRepository(pool)
            await refuse_missing_servers(config.storage_fleet(), servers)
            client = await connect_client(config, interceptors=client_interceptors(tracer_provider))
            yield AppState(
                tenants=TenantRepository(pool, reads=reads),
                deletions=DeletionRepository(pool),
                moves=MoveRepository(pool),
                drains=DrainRepository(pool),
                rollouts=RolloutRepository(pool),
                service_versions=ServiceVersions(pool),
                servers=servers,
                settings=config,
                workflows=WorkflowGateway(client, config),
                temporal=client,
                jwks=jwks,
                verifier=verifier,
                max_body_bytes=config.api_max_body_bytes,
                console_sign_outs=ConsoleSignOuts(pool),
                command_bus=command_bus,
                directory=DirectoryRepository(reads),
                events_position=events_position,
            )
        finally:
            if events_position is not None:
                await events_position.close()
            if command_bus is not None:
                await command_bus.close()
            await reads.close()
            await pool.close()
            shutdown_tracing(tracer_provider)

    app = FastAPI(
        title="Platform Service",
        summary="Provisions tenants: metadata, PostgreSQL storage and downstream migrations.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by install_docs from packaged assets: no CDN (a control plane lives offline).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_openapi(app)
    install_metrics(app)
    instrument_fastapi(app, tracer_provider)
    app.include_router(tenants_router)
    app.include_router(directory_router)
    app.include_router(deletion_router)
    app.include_router(moves_router)
    app.include_router(rollouts_router)
    app.include_router(services_router)
    app.include_router(storage_servers_router)
    app.include_router(drains_router)
    app.include_router(stats_router)
    app.include_router(health_router)
    app.include_router(jwks_router)
    app.include_router(admin_router(settings))
    install_docs(app)
    install_console(app)
    install_request_limits(app)
    return app


app = create_app()
