"""Storage server endpoints: the configured servers with their state, tenants and last check,
one server's audit trail, and cordon / uncordon.

Reading needs `tenants:read`; cordon and uncordon need `servers:write`. A cordoned server takes
no new tenant and keeps serving its own; the state is the server's row in the metadata
database (`infra.db.servers`), so it survives restarts, and each change is one guarded write
with its audit event. `reachable`, `checkedAt` and `serverVersion` are what the worker's
periodic check recorded: a request never waits on a server. No answer carries a server's URL
(it may hold a password), only its `host`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Path, status
from pydantic import StringConstraints

from api.deps import Config, Reader, Servers, ServerWriter
from api.errors import ApiError, StatusConflict
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES
from infra.db.servers import (
    AlreadyInState,
    DrainProgress,
    ServerEvent,
    ServerRecord,
    ServerRepository,
)
from tenancy.fleet import (
    SERVER_NAME_PATTERN,
    ServerEventType,
    ServerState,
    StorageServer,
    tiers_of,
)
from tenancy.models import CamelModel, RequestModel, SlaTier, StorageMode
from tenancy.naming import server_authority
from tenancy.settings import Settings
from tenancy.text import PrintableText

storage_servers_router = APIRouter(
    prefix="/api/storage-servers", tags=["storage servers"], route_class=GuardedRoute
)
ServerNamePath = Annotated[
    str, Path(pattern=SERVER_NAME_PATTERN, description="The storage server's name.")
]


class StorageServerNotFound(ApiError):
    """No configured storage server with that name."""

    status = 404
    title = "Storage server not found"
    slug = "storage-server-not-found"


class DrainFailureItem(CamelModel):
    """A tenant the drain could not move, and why."""

    tenant_id: str
    reason: str


class DrainItem(CamelModel):
    """The server's last drain: its tenants (`total`), those moved off, failed and moving now;
    `endedAt` once its run ended (the server then DRAINED, CORDONED, or DRAINING with
    `failures`)."""

    total: int
    moved: int
    failed: int
    running: int
    reason: str | None
    concurrency: int | None
    started_at: datetime
    ended_at: datetime | None
    failures: list[DrainFailureItem]

    @classmethod
    def of(cls, drain: DrainProgress | None) -> DrainItem | None:
        """The answer for a server's drain (None: never drained)."""
        if drain is None:
            return None
        return cls(
            total=drain.total,
            moved=drain.moved,
            failed=drain.failed,
            running=drain.running,
            reason=drain.reason,
            concurrency=drain.concurrency,
            started_at=drain.started_at,
            ended_at=drain.ended_at,
            failures=[DrainFailureItem.model_validate(f) for f in drain.failures],
        )


class StorageServerItem(CamelModel):
    """A configured storage server: its configuration (never its URL), its state, its tenants
    (every status but DELETED), the SLA tiers placed into its pool, and its last check
    (null until the worker has checked it)."""

    name: str
    pool: str
    state: ServerState
    storage_modes: list[StorageMode]
    max_tenants: int
    tenants: int
    tiers: list[SlaTier]
    reachable: bool | None
    checked_at: datetime | None
    server_version: str | None
    host: str
    state_reason: str | None
    state_changed_at: datetime | None
    state_changed_by: str | None
    check_error: str | None
    drain: DrainItem | None = None

    @classmethod
    def of(
        cls, server: StorageServer, record: ServerRecord, placement: dict[SlaTier, str]
    ) -> StorageServerItem:
        """The answer for one server and its row."""
        return cls(
            name=server.name,
            pool=server.pool,
            state=record.state,
            storage_modes=list(server.storage_modes),
            max_tenants=server.max_tenants,
            tenants=record.tenants,
            tiers=tiers_of(placement, server.pool),
            reachable=record.reachable,
            checked_at=record.checked_at,
            server_version=record.server_version,
            host=server_authority(server.dsn),
            state_reason=record.state_reason,
            state_changed_at=record.state_changed_at,
            state_changed_by=record.state_changed_by,
            check_error=_without_password(record.check_error, server),
            drain=DrainItem.of(record.drain),
        )


def _without_password(text: str | None, server: StorageServer) -> str | None:
    """`text` with the server's password (as written in its URL, and decoded) as `***`: a
    check's error is a driver's message, which may quote what it was given."""
    if not text:
        return text
    for host in server.url.hosts():
        password = host.get("password")
        if password:
            for form in (password, unquote(password)):
                text = text.replace(form, "***")
    return text


class StorageServerList(CamelModel):
    """Every configured storage server, in configuration order."""

    items: list[StorageServerItem]


class StorageServerEventItem(CamelModel):
    """One cordon, uncordon or drain event of a server."""

    type: ServerEventType
    actor: str
    reason: str | None
    occurred_at: datetime

    @classmethod
    def of(cls, event: ServerEvent) -> StorageServerEventItem:
        """The answer for one audit event."""
        return cls(
            type=event.type,
            actor=event.actor,
            reason=event.reason,
            occurred_at=event.occurred_at,
        )


class StorageServerEvents(CamelModel):
    """A server's audit trail, oldest first."""

    items: list[StorageServerEventItem]


class StateChange(RequestModel):
    """Body of cordon and uncordon (optional): why, for the audit trail."""

    reason: Annotated[PrintableText, StringConstraints(min_length=1, max_length=500)] | None = None


def configured(settings: Settings, name: str) -> StorageServer:
    for server in settings.storage_fleet():
        if server.name == name:
            return server
    raise StorageServerNotFound(f"no storage server {name} is configured", server=name)


async def server_item(
    servers: ServerRepository, settings: Settings, name: str
) -> StorageServerItem:
    server = configured(settings, name)
    record = (await servers.records([name]))[name]
    return StorageServerItem.of(server, record, settings.placement_map())


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No storage server with that name is configured"}
}


@storage_servers_router.get("", response_model=StorageServerList, responses=AUTH_RESPONSES)
async def list_storage_servers(_: Reader, servers: Servers, config: Config) -> StorageServerList:
    """Every configured storage server, in configuration order (needs `tenants:read`)."""
    fleet = config.storage_fleet()
    records = await servers.records([s.name for s in fleet])
    placement = config.placement_map()
    return StorageServerList(
        items=[StorageServerItem.of(s, records[s.name], placement) for s in fleet]
    )


@storage_servers_router.get(
    "/{name}",
    response_model=StorageServerItem,
    responses={**AUTH_RESPONSES, **_NOT_FOUND},
)
async def get_storage_server(
    _: Reader, name: ServerNamePath, servers: Servers, config: Config
) -> StorageServerItem:
    """One storage server (needs `tenants:read`)."""
    return await server_item(servers, config, name)


@storage_servers_router.get(
    "/{name}/events",
    response_model=StorageServerEvents,
    responses={**AUTH_RESPONSES, **_NOT_FOUND},
)
async def storage_server_events(
    _: Reader, name: ServerNamePath, servers: Servers, config: Config
) -> StorageServerEvents:
    """Who cordoned and uncordoned the server, when and why, oldest first (needs
    `tenants:read`)."""
    configured(config, name)
    return StorageServerEvents(
        items=[StorageServerEventItem.of(e) for e in await servers.events(name)]
    )


def _state_route(verb: str, target: ServerState, already: str, doc: str) -> None:
    """Register `POST /{name}/{verb}`: move the server to `target`, with its audit event."""

    async def endpoint(
        principal: ServerWriter,
        name: ServerNamePath,
        servers: Servers,
        config: Config,
        change: StateChange | None = None,
    ) -> StorageServerItem:
        configured(config, name)
        reason = change.reason if change is not None else None
        try:
            await servers.set_state(name, target, principal.subject, reason)
        except AlreadyInState as exc:
            raise StatusConflict(str(exc), serverState=exc.state.value) from None
        return await server_item(servers, config, name)

    endpoint.__name__ = f"{verb}_storage_server"
    endpoint.__doc__ = doc
    responses: dict[int | str, dict[str, Any]] = {
        **AUTH_RESPONSES,
        **_NOT_FOUND,
        409: {"description": already},
        422: {"description": "Invalid name or reason"},
    }
    storage_servers_router.add_api_route(
        f"/{{name}}/{verb}",
        endpoint,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=StorageServerItem,
        responses=responses,
    )


_state_route(
    "cordon",
    ServerState.CORDONED,
    "The server is already cordoned",
    "Place no new tenant on the server; its tenants keep being served (needs `servers:write`; "
    'body `{"reason": "..."}` optional; 409 when already cordoned).',
)
_state_route(
    "uncordon",
    ServerState.ACTIVE,
    "The server is already active",
    "Let the server take new tenants again (needs `servers:write`; "
    'body `{"reason": "..."}` optional; 409 when it is not cordoned).',
)
