"""The tenant directory: where each tenant's storage is and whether it may be used, for the
other services. Read with `directory:read` (a service's token, which reads nothing else) or
`tenants:read`.

`GET /api/tenants/{id}/location` answers one location with a strong `ETag` (`"loc-<epoch>"`:
the epoch grows with every change of the status, the server or the jdbcUrl) and `Cache-Control:
no-cache`, and 304 to a matching `If-None-Match`. `GET /api/tenant-locations` pages every
tenant that is not DELETED by id and gives, on the first page, the lifecycle stream's position
read before that page: a client that lists every page and then follows `platform.tenants.>`
from `sequence + 1`, keeping per tenant the highest epoch, misses no change.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api import cursor as cursors
from api.deps import Directory, DirectoryReader, EventsPositions
from api.errors import TenantNotFound
from api.etags import CACHE_CONTROL, conditional_json
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES, CACHE_HEADERS, NOT_MODIFIED, TenantIdPath
from infra.events.bus import BusUnavailable
from infra.events.nats import STREAM
from tenancy.models import CamelModel, TenantLocation

_log = logging.getLogger("platform.api.directory")

directory_router = APIRouter(prefix="/api", tags=["tenant directory"], route_class=GuardedRoute)


class EventsPosition(CamelModel):
    """Where to follow the lifecycle events from: their stream and its last sequence before the
    listing (consume from `sequence + 1`)."""

    stream: str
    sequence: int


class TenantLocationPage(CamelModel):
    """One page of locations by tenant id; pass `nextCursor` back as `cursor` for the next.
    `eventsPosition` only on the first page, null without NATS (or when it did not answer)."""

    items: list[TenantLocation]
    next_cursor: str | None = None
    events_position: EventsPosition | None = None


def location_etag(location: TenantLocation) -> str:
    """The location's entity tag: its epoch changes with every change of its answer."""
    return f'"loc-{location.epoch}"'


@directory_router.get(
    "/tenants/{tenant_id}/location",
    response_model=TenantLocation,
    responses={
        **AUTH_RESPONSES,
        200: {"description": "The tenant's location", "headers": CACHE_HEADERS},
        304: NOT_MODIFIED,
        404: {"description": "No such tenant"},
    },
)
async def tenant_location(
    _: DirectoryReader, tenant_id: TenantIdPath, directory: Directory, request: Request
) -> Response:
    """Where the tenant's storage is and its status (needs `directory:read` or `tenants:read`);
    a DELETED tombstone answers too (status DELETED, jdbcUrl null), so a caller learns that the
    tenant is gone."""
    location = await directory.location(tenant_id)
    if location is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    return conditional_json(request, location.model_dump_json().encode(), location_etag(location))


@directory_router.get(
    "/tenant-locations",
    response_model=TenantLocationPage,
    responses={
        **AUTH_RESPONSES,
        200: {
            "description": "A page of locations",
            "headers": {"Cache-Control": CACHE_HEADERS["Cache-Control"]},
        },
    },
)
async def tenant_locations(
    _: DirectoryReader,
    directory: Directory,
    positions: EventsPositions,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TenantLocationPage:
    """Every tenant's location but DELETED ones', by id, in pages of `limit` (needs
    `directory:read` or `tenants:read`)."""
    response.headers["Cache-Control"] = CACHE_CONTROL
    after = cursors.decode_id(cursor) if cursor else None
    position = None
    if after is None and positions is not None:
        # Read before the page: every change the page does not show commits after it, so
        # its event is published after this position.
        try:
            position = EventsPosition(stream=STREAM, sequence=await positions.last_sequence())
        except BusUnavailable as exc:
            _log.warning("the tenant locations are listed without an events position: %s", exc)
    page = await directory.page(limit=limit, after=after)
    return TenantLocationPage(
        items=page.items,
        next_cursor=cursors.encode_id(page.next_after) if page.next_after else None,
        events_position=position,
    )
