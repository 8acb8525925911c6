"""The platform's directory endpoints as the client library's tests need them, built to the
issue's contract: an in-memory table of locations whose every change bumps the epoch and is
then published to the real NATS stream (`PLATFORM_EVENTS`) as a lifecycle event carrying
`data.location`, as the outbox relay publishes it after the commit.

`GET /api/tenants/{id}/location` answers with `ETag: "loc-<epoch>"` and 304 on a matching
`If-None-Match`; `GET /api/tenant-locations` pages by tenant id and gives, on the first page,
the stream's last sequence read before the page. A test can stop answering (`failing = 503`),
run code of its own before or after a page is read (`before_page`,
`after_page`), and read every request made.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.events.nats import STREAM, declare_events_stream, stream_config

TOKEN = "directory-test-token"


@dataclass(frozen=True)
class Seen:
    """One request the server answered."""

    path: str
    if_none_match: str | None
    status: int


@dataclass
class DirectoryPlatform:
    """The tenants' locations, the events they publish and the HTTP app serving them."""

    js: JetStreamContext
    loop: asyncio.AbstractEventLoop
    page_size: int = 100
    failing: int | None = None
    # The listing's eventsPosition is null, as when the platform's events are not on NATS.
    no_events: bool = False
    # Awaited on the test's loop before the listing's page of that number (0: the first) is read.
    before_page: dict[int, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    # Awaited on the test's loop once that page was read, before it is answered.
    after_page: dict[int, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    locations: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, path: str) -> list[Seen]:
        """The requests made to `path` so far."""
        with self._lock:
            return [seen for seen in self.seen if seen.path == path]

    async def create(self, tenant_id: str, *, jdbc_url: str | None = None) -> dict[str, Any]:
        """A new ACTIVE tenant at epoch 1, published."""
        location = {
            "tenantId": tenant_id,
            "status": "ACTIVE",
            "storageMode": "SCHEMA",
            "storageServer": "default",
            "jdbcUrl": jdbc_url or f"jdbc:postgresql://db:5432/platform?currentSchema={tenant_id}",
            "epoch": 1,
        }
        with self._lock:
            self.locations[tenant_id] = location
        await self.publish(location)
        return dict(location)

    async def change(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        """Change a tenant's location (camelCase fields), bump its epoch, then publish."""
        with self._lock:
            location = self.locations[tenant_id] | fields
            location["epoch"] = self.locations[tenant_id]["epoch"] + 1
            self.locations[tenant_id] = location
        await self.publish(location)
        return dict(location)

    async def publish(self, location: dict[str, Any]) -> int:
        """Publish a status-changed event carrying `location`; its stream sequence."""
        tenant_id = location["tenantId"]
        event = {
            "specversion": "1.0",
            "type": "io.platform-service.tenant.status-changed.v1",
            "source": "/test",
            "id": str(uuid.uuid4()),
            "subject": tenant_id,
            "datacontenttype": "application/json",
            "data": {"tenantId": tenant_id, "epoch": location["epoch"], "location": location},
        }
        ack = await self.js.publish(
            f"platform.tenants.{tenant_id}.status-changed",
            json.dumps(event).encode(),
            stream=STREAM,
            headers={"Nats-Msg-Id": event["id"]},
        )
        return int(ack.seq)

    def app(self) -> Starlette:
        """The HTTP app; serve it with `tests.support.servers.serve`."""
        return Starlette(
            routes=[
                Route("/api/tenants/{tenant_id}/location", self._location),
                Route("/api/tenant-locations", self._listing),
            ]
        )

    def _answer(self, request: Request, response: Response) -> Response:
        with self._lock:
            self.seen.append(
                Seen(
                    request.url.path,
                    request.headers.get("if-none-match"),
                    response.status_code,
                )
            )
        return response

    def _refusal(self, request: Request) -> Response | None:
        if self.failing is not None:
            return Response(status_code=self.failing)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"title": "Unauthorized"}, status_code=401)
        return None

    async def _location(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return self._answer(request, refused)
        with self._lock:
            location = self.locations.get(request.path_params["tenant_id"])
        if location is None:
            return self._answer(request, JSONResponse({"title": "Not Found"}, status_code=404))
        etag = f'"loc-{location["epoch"]}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return self._answer(request, Response(status_code=304, headers=headers))
        return self._answer(request, JSONResponse(location, headers=headers))

    async def _listing(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return self._answer(request, refused)
        cursor = request.query_params.get("cursor")
        limit = int(request.query_params.get("limit", self.page_size))
        page_number = 0 if cursor is None else int(cursor.partition(":")[0])
        hook = self.before_page.get(page_number)
        if hook is not None:
            await self._on_test_loop(hook())
        position = None
        if cursor is None and not self.no_events:
            info = await self._on_test_loop(self.js.stream_info(STREAM))
            position = {"stream": STREAM, "sequence": info.state.last_seq}
        after = "" if cursor is None else cursor.partition(":")[2]
        with self._lock:
            ids = sorted(i for i in self.locations if i > after)[:limit]
            items = [
                dict(self.locations[i]) for i in ids if self.locations[i]["status"] != "DELETED"
            ]
        more = len(ids) == limit
        hook = self.after_page.get(page_number)
        if hook is not None:
            await self._on_test_loop(hook())
        body = {
            "items": items,
            "nextCursor": f"{page_number + 1}:{ids[-1]}" if more and ids else None,
            "eventsPosition": position,
        }
        return self._answer(request, JSONResponse(body))

    async def _on_test_loop(self, work: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await work

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))


@asynccontextmanager
async def directory_platform(nats_url: str) -> AsyncIterator[DirectoryPlatform]:
    """A platform publishing to the NATS server at `nats_url` (the stream declared as the
    platform declares it)."""
    nc: NatsClient = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await declare_events_stream(js, stream_config())
        yield DirectoryPlatform(js=js, loop=asyncio.get_running_loop())
    finally:
        await nc.close()
