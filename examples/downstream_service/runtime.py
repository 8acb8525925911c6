"""The service's own runtime endpoint, as a real service would have one: it finds the tenant's
storage through the platform's directory (never a URL of its own), then reads or writes there
with the service's role.

    POST /tenants/{id}/notes {"text": "..."}  -> 201 {"id", "text", "createdAt"}
    GET  /tenants/{id}/notes                  -> 200 {"items": [...]} (oldest first)

What the service does in each status of the tenant (the directory's answer):

- ACTIVE: reads and writes (migrated and usable).
- DELETION_SCHEDULED: reads; writes 409 (still restorable, so its data stays readable, but a
  write would be lost at the purge).
- MOVING: reads and writes where the tenant is, until its storage there refuses the service
  (frozen while it is copied: what was written before is copied, nothing after is accepted);
  then 503 with Retry-After 1. MOVING is not kept: the next call asks the directory again,
  so the service serves the tenant on its target as soon as the move switches, not once its
  entry is old.
- PROVISIONING, MIGRATING, PROVISION_ERROR, MIGRATION_ERROR: 503 with Retry-After (storage
  absent, or not migrated yet: come back later).
- DELETING, DELETED: 410 (its data is gone or going).
- An unknown tenant: 404; the directory unreachable with nothing known: 503.

When the storage refuses the service (the database is gone, the service's role lost its access:
the tenant was moved, or the entry is stale), the service invalidates the directory's entry,
resolves the tenant again and tries once more, so a moved tenant is followed at once.

The notes live in the service's own table `<service>_notes` in the tenant's schema, created on
first use by the service's role (it owns it, as it owns what its migrations create).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from examples.downstream_service.errors import DownstreamError, NotConfigured, StorageUnavailable
from examples.downstream_service.models import parse_jdbc_url
from examples.downstream_service.pools import StoragePools

_log = logging.getLogger(__name__)
runtime = APIRouter(prefix="/tenants", tags=["runtime"])
TenantIdPath = Annotated[str, PathParam(pattern=r"^[a-z][a-z0-9_]{2,39}$")]
ResultT = TypeVar("ResultT")

READABLE = {"ACTIVE", "DELETION_SCHEDULED", "MOVING"}
WRITABLE = {"ACTIVE", "MOVING"}
GONE = {"DELETING", "DELETED"}
# A move's freeze: the tenant is served again, elsewhere, within seconds.
PASSING = {"MOVING"}
RETRY_AFTER_SECONDS = 5
MOVING_RETRY_AFTER_SECONDS = 1


class TenantNotServed(DownstreamError):
    """The tenant's status does not allow this call now (or ever)."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status
        self.code = code
        self.title = title
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def _directory_failure(exc: Exception, tenant_id: str) -> DownstreamError:
    """The client library's errors as the service's answers."""
    if type(exc).__name__ == "TenantNotFound":
        return TenantNotServed(
            404, "tenant_not_found", "Tenant not found", f"no tenant {tenant_id}"
        )
    return TenantNotServed(
        503,
        "directory_unavailable",
        "Directory unavailable",
        f"the platform's directory cannot say where tenant {tenant_id} is: try again later",
        retry_after=RETRY_AFTER_SECONDS,
    )


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class NoteIn(_Camel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)


class Note(_Camel):
    id: int
    text: str
    created_at: datetime


class Notes(_Camel):
    items: list[Note]


def _table(service_name: str, schema: str) -> sql.Composed:
    return sql.SQL("{}").format(sql.Identifier(schema, service_name.replace("-", "_") + "_notes"))


def _refused(exc: BaseException) -> bool:
    """The storage said no to this service: it is elsewhere now, or gone."""
    return isinstance(
        exc,
        psycopg.errors.InsufficientPrivilege
        | psycopg.errors.InvalidCatalogName
        | psycopg.errors.InvalidSchemaName
        | StorageUnavailable,
    )


def _allowed(status: str, write: bool, tenant_id: str) -> None:
    if status in (WRITABLE if write else READABLE):
        return
    if status in GONE:
        raise TenantNotServed(410, "tenant_gone", "Tenant gone", f"tenant {tenant_id} is {status}")
    if status == "DELETION_SCHEDULED":
        raise TenantNotServed(
            409,
            "tenant_leaving",
            "Tenant scheduled for deletion",
            f"tenant {tenant_id} is scheduled for deletion: reads only (restore it to write)",
        )
    raise TenantNotServed(
        503,
        "tenant_not_ready",
        "Tenant not ready",
        f"tenant {tenant_id} is {status}: try again later",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def _in_storage(
    request: Request,
    tenant_id: str,
    *,
    write: bool,
    work: Callable[[psycopg.Connection[Any], str], ResultT],
) -> ResultT:
    """Resolve the tenant, check its status, run `work` in its storage; on a refusal,
    invalidate the entry, resolve again and run once more."""
    directory = getattr(request.app.state, "directory", None)
    if directory is None:
        raise NotConfigured("DOWNSTREAM_DIRECTORY_URL is not set: the service cannot find tenants")
    pools: StoragePools = request.app.state.pools
    for attempt in (1, 2):
        try:
            location = await directory.get(tenant_id)
        except Exception as exc:
            raise _directory_failure(exc, tenant_id) from exc
        if location.status in PASSING:
            # Over in moments: the next call asks the directory again rather than refusing
            # until the entry is old (the tenant is ACTIVE on its target by then).
            directory.invalidate(tenant_id)
        _allowed(location.status, write, tenant_id)
        if location.jdbc_url is None:
            raise TenantNotServed(
                503, "tenant_not_ready", "Tenant not ready", f"tenant {tenant_id} has no storage"
            )
        address = parse_jdbc_url(location.jdbc_url)
        schema = "public" if location.storage_mode == "DATABASE" else f"tenant_{tenant_id}"

        def run(address: Any = address, schema: str = schema) -> ResultT:
            with pools.connection(address) as conn:
                return work(conn, schema)

        try:
            return await run_in_threadpool(run)
        except Exception as exc:
            if not _refused(exc):
                raise
            directory.invalidate(tenant_id)
            if location.status in PASSING:
                # Frozen for the copy: back in moments, on its target.
                raise TenantNotServed(
                    503,
                    "tenant_moving",
                    "Tenant moving",
                    f"tenant {tenant_id} is moving to another storage server: try again",
                    retry_after=MOVING_RETRY_AFTER_SECONDS,
                ) from exc
            if attempt == 2:
                raise
            _log.info("storage of %s refused the service (%s): resolving again", tenant_id, exc)
    raise AssertionError("unreachable")


def _ensure_table(conn: psycopg.Connection[Any], table: sql.Composed) -> None:
    """Make the notes table unless it is there (inside the caller's transaction). First writes
    made at once would race in CREATE TABLE IF NOT EXISTS (the loser fails on the catalog's
    unique index), so the making is serialised by a transaction-level advisory lock on the
    table's name; a table already there costs one lookup and no lock."""
    name = table.as_string(conn)
    found = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    if found is not None and found[0] is not None:
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "text TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ).format(table)
    )


@runtime.post("/{tenant_id}/notes", status_code=201, response_model=Note)
async def add_note(request: Request, tenant_id: TenantIdPath, body: NoteIn) -> Note:
    """Write a note into the tenant's storage (ACTIVE tenants only)."""
    service = request.app.state.settings.service_name

    def write(conn: psycopg.Connection[Any], schema: str) -> Note:
        table = _table(service, schema)
        with conn.transaction():
            _ensure_table(conn, table)
            row = conn.execute(
                sql.SQL("INSERT INTO {} (text) VALUES (%s) RETURNING id, text, created_at").format(
                    table
                ),
                (body.text,),
            ).fetchone()
        assert row is not None
        return Note(id=row[0], text=row[1], created_at=row[2])

    return await _in_storage(request, tenant_id, write=True, work=write)


@runtime.get("/{tenant_id}/notes", response_model=Notes)
async def list_notes(request: Request, tenant_id: TenantIdPath, response: Response) -> Notes:
    """The tenant's notes, oldest first (ACTIVE or DELETION_SCHEDULED tenants)."""
    service = request.app.state.settings.service_name

    def read(conn: psycopg.Connection[Any], schema: str) -> Notes:
        try:
            rows = conn.execute(
                sql.SQL("SELECT id, text, created_at FROM {} ORDER BY id").format(
                    _table(service, schema)
                )
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
        return Notes(items=[Note(id=r[0], text=r[1], created_at=r[2]) for r in rows])

    return await _in_storage(request, tenant_id, write=False, work=read)
