"""A storage server's drain: `POST /api/storage-servers/{name}/drain` and `/cancel-drain`
(both `servers:write`).

A drain is recorded on the server's row first (DRAINING, its progress zeroed: one guarded write,
`infra.db.drains`), then `DrainServerWorkflow` (`server-drain-{name}`) is started; it moves the
server's tenants off by placement and writes its progress on the row, which
`GET /api/storage-servers/{name}` shows as `drain`. A drain whose run ended with tenants left
(the server still DRAINING) starts again on a new request; a start Temporal surely did not
make (an error it answered, or a run of the last drain still open) ends the drain's run on the
row, so the next request starts it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import Field, StringConstraints

from api.deps import Config, Drains, Servers, ServerWriter, Workflows
from api.errors import StatusConflict
from api.gateway import DrainRunNotStarted, DrainRunOpen
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES
from api.routes.storage_servers import (
    ServerNamePath,
    StorageServerItem,
    configured,
    server_item,
)
from infra.db.drains import DrainConflict
from tenancy.fleet import ServerState
from tenancy.models import RequestModel
from tenancy.text import PrintableText
from workflows.drain.contracts import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, DrainInput

drains_router = APIRouter(
    prefix="/api/storage-servers", tags=["storage servers"], route_class=GuardedRoute
)


class DrainRequest(RequestModel):
    """Body of a drain (optional): how many moves at once, and why."""

    concurrency: int = Field(
        default=DEFAULT_CONCURRENCY,
        ge=1,
        le=MAX_CONCURRENCY,
        strict=True,
        description="How many of the server's tenants move at once.",
    )
    reason: Annotated[PrintableText, StringConstraints(min_length=1, max_length=500)] | None = None


def _responses(conflict: str) -> dict[int | str, dict[str, Any]]:
    return {
        **AUTH_RESPONSES,
        404: {"description": "No storage server with that name is configured"},
        409: {"description": conflict},
        422: {"description": "Invalid name or body"},
        503: {"description": "Temporal is unavailable"},
    }


@drains_router.post(
    "/{name}/drain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StorageServerItem,
    responses=_responses("The server is DRAINED, or DRAINING with its drain's run under way"),
)
async def drain_storage_server(
    principal: ServerWriter,
    name: ServerNamePath,
    servers: Servers,
    drains: Drains,
    workflows: Workflows,
    config: Config,
    request: DrainRequest | None = None,
) -> StorageServerItem:
    """Move every tenant off the server (needs `servers:write`): DRAINING at once (it takes no
    new tenant), then `DrainServerWorkflow` moves its tenants by placement in their pools,
    `concurrency` at once (default 4, 1 to 32), and leaves it DRAINED when it is empty. A
    server left DRAINING by a drain whose run ended (tenants it could not move) is drained
    again. Body `{"concurrency"?, "reason"?}` optional."""
    configured(config, name)
    body = request or DrainRequest()
    try:
        await drains.start(name, principal.subject, body.reason, body.concurrency)
    except DrainConflict as conflict:
        raise StatusConflict(str(conflict), serverState=conflict.state.value) from None
    try:
        await workflows.start_drain(
            DrainInput(
                server=name,
                requested_by=principal.subject,
                concurrency=body.concurrency,
                reason=body.reason,
            )
        )
    except DrainRunNotStarted:
        # No run of this drain: its end goes back on the row, so the next request starts it.
        await drains.finish(
            name, principal.subject, cancelled=False, reason="the drain's workflow could not start"
        )
        raise
    except DrainRunOpen:
        # The open run has ended its drain (the row said so): it stays ended, not under way
        # with no run of it.
        await drains.finish(
            name, principal.subject, cancelled=False, reason="the last drain's run is still open"
        )
        raise
    return await server_item(servers, config, name)


@drains_router.post(
    "/{name}/cancel-drain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StorageServerItem,
    responses=_responses("The server is not DRAINING"),
)
async def cancel_drain(
    principal: ServerWriter,
    name: ServerNamePath,
    servers: Servers,
    drains: Drains,
    workflows: Workflows,
    config: Config,
) -> StorageServerItem:
    """Stop a drain (needs `servers:write`): its run starts no further move, the moves in
    flight finish, then the server is CORDONED. A drain whose run has ended is CORDONED at
    once. 409 unless DRAINING."""
    configured(config, name)
    record = (await servers.records([name]))[name]
    if record.state is not ServerState.DRAINING:
        raise StatusConflict(
            f"storage server {name} is {record.state.value}; cancel-drain needs DRAINING",
            serverState=record.state.value,
        )
    ended = record.drain is not None and record.drain.ended_at is not None
    if ended or not await workflows.cancel_drain(name, principal.subject):
        # Its run has ended the drain (it may not have closed yet), or no run is open (it was
        # lost): nothing is in flight.
        await drains.finish(name, principal.subject, cancelled=True)
    return await server_item(servers, config, name)
