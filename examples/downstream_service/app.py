"""HTTP surface of the downstream service: `POST /internal/tenants/{id}/migrate` and `/healthz`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from examples.downstream_service.errors import (
    DownstreamError,
    InvalidRequest,
    MissingIdempotencyKey,
)
from examples.downstream_service.migrator import Migrator, Target, load_migrations
from examples.downstream_service.models import (
    TENANT_ID_PATTERN,
    MigrateRequest,
    MigrateResponse,
)
from examples.downstream_service.settings import DownstreamSettings, get_settings

_log = logging.getLogger(__name__)


def _migrator(request: Request) -> Migrator:
    migrator: Migrator = request.app.state.migrator
    return migrator


def _settings(request: Request) -> DownstreamSettings:
    settings: DownstreamSettings = request.app.state.settings
    return settings


def _idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> str:
    # A dependency rather than a required header parameter: a missing key is a 400 here, not
    # FastAPI's 422, and it is checked before the body is.
    if key is None or not key.strip():
        raise MissingIdempotencyKey("the Idempotency-Key header is required")
    return key.strip()


MigratorDep = Annotated[Migrator, Depends(_migrator)]
SettingsDep = Annotated[DownstreamSettings, Depends(_settings)]
IdempotencyKey = Annotated[str, Depends(_idempotency_key)]
TenantIdPath = Annotated[str, PathParam(pattern=TENANT_ID_PATTERN)]

router = APIRouter()


@router.get("/healthz")
def healthz(settings: SettingsDep) -> dict[str, str]:
    """Liveness: the process answers (PostgreSQL is not checked)."""
    return {"status": "ok", "service": settings.service_name}


@router.post("/internal/tenants/{tenant_id}/migrate")
def migrate(
    tenant_id: TenantIdPath,
    body: MigrateRequest,
    idempotency_key: IdempotencyKey,
    migrator: MigratorDep,
) -> MigrateResponse:
    """Apply this service's pending migrations to the tenant's storage.

    A plain `def`, so FastAPI runs the blocking yoyo work in its thread pool.
    """
    if body.tenant_id != tenant_id:
        raise InvalidRequest.field("tenantId", "must equal the tenant id in the path")
    _log.info(
        "migrate tenant=%s mode=%s jdbcUrl=%s idempotency_key=%s",
        tenant_id,
        body.storage_mode,
        body.jdbc_url,
        idempotency_key,
    )
    outcome = migrator.migrate(Target(database=body.database, schema=body.schema_name))
    return MigrateResponse(version=outcome.version, applied=outcome.applied)


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = []
    for error in exc.errors():
        location, *path = error.get("loc", ()) or ("body",)
        errors.append(
            {
                "field": ".".join(str(part) for part in path) or str(location),
                "location": str(location),
                "message": str(error.get("msg", "invalid")),
            }
        )
    return InvalidRequest(errors)


def create_app(settings: DownstreamSettings | None = None) -> FastAPI:
    """Build the app; migrations are read at start-up, PostgreSQL is reached per call only."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrations = await run_in_threadpool(load_migrations, settings.migrations_path)
        app.state.settings = settings
        app.state.migrator = Migrator(
            service_name=settings.service_name,
            database_url=str(settings.database_url) if settings.database_url else None,
            migrations=migrations,
            connect_timeout=settings.connect_timeout,
            lock_timeout=settings.lock_timeout,
        )
        _log.info(
            "%s ready with migrations %s",
            settings.service_name,
            ", ".join(app.state.migrator.migration_ids),
        )
        yield

    app = FastAPI(title=settings.service_name, lifespan=lifespan)
    app.include_router(router)

    @app.exception_handler(DownstreamError)
    async def _render_error(request: Request, exc: DownstreamError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _render_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = _validation_error(exc)
        return JSONResponse(error.body(), status_code=error.status_code)

    return app


app = create_app()
