"""Downstream services for fault tests: a gate that holds calls in flight, and a service that
hangs on a tenant's first call until the caller gives up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Bounds how long a held call can outlive a test that forgot to open its gate.
HOLD_LIMIT = 120.0
_MIGRATE_PREFIX = "/internal/tenants/"


class Gate:
    """Holds migrate calls in flight: while closed, every call to an app it `wrap`s waits
    before reaching the app; opening lets the held calls through, also those whose caller
    has died meanwhile. One gate can wrap several apps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hold_all = False
        self._hold: set[str] = set()
        self._waiting: Counter[str] = Counter()

    def close(self, tenant_ids: Iterable[str] | None = None) -> None:
        """Hold every migrate call from now on, or only those of `tenant_ids`."""
        with self._lock:
            if tenant_ids is None:
                self._hold_all = True
            else:
                self._hold = set(tenant_ids)

    def open(self) -> None:
        """Let held and future calls through."""
        with self._lock:
            self._hold_all = False
            self._hold = set()

    def _holds(self, tenant_id: str) -> bool:
        with self._lock:
            return self._hold_all or tenant_id in self._hold

    def held(self, tenant_id: str | None = None) -> int:
        """How many calls (for `tenant_id`, or for any tenant) are waiting at the gate."""
        with self._lock:
            if tenant_id is None:
                return sum(self._waiting.values())
            return self._waiting[tenant_id]

    def wrap(self, app: Any) -> Any:
        """`app` (ASGI) behind this gate."""

        async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
            path: str = scope.get("path", "")
            if scope["type"] == "http" and path.startswith(_MIGRATE_PREFIX):
                receive = await _buffered(receive)
                await self._pass(path.removeprefix(_MIGRATE_PREFIX).split("/", 1)[0])
            await app(scope, receive, send)

        return gated

    async def _pass(self, tenant_id: str) -> None:
        with self._lock:
            self._waiting[tenant_id] += 1
        try:
            deadline = time.monotonic() + HOLD_LIMIT
            while self._holds(tenant_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            with self._lock:
                self._waiting[tenant_id] -= 1


async def _buffered(receive: Any) -> Any:
    """Read the whole request body now, so it is still there for the app when the caller has
    gone by the time the gate opens."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed() -> Any:
        return replay.pop() if replay else await receive()

    return replayed


@dataclass
class HungCall:
    """One call to `HangingService`."""

    tenant_id: str
    idempotency_key: str | None
    answered: bool = False
    caller_gone: bool = False


class HangingService:
    """Never answers a tenant's first migrate call (it waits until the caller disconnects);
    answers 200 with `version` to every later one."""

    def __init__(self, version: str = "0002") -> None:
        self.version = version
        self._lock = threading.Lock()
        self._calls: list[HungCall] = []
        self._released = threading.Event()

    def calls_for(self, tenant_id: str) -> list[HungCall]:
        """The calls received for one tenant, oldest first."""
        with self._lock:
            return [call for call in self._calls if call.tenant_id == tenant_id]

    def release(self) -> None:
        """End every hanging call (teardown), so the server can stop."""
        self._released.set()

    async def _migrate(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        await request.body()
        call = HungCall(tenant_id, request.headers.get("Idempotency-Key"))
        with self._lock:
            first = not any(c.tenant_id == tenant_id for c in self._calls)
            self._calls.append(call)
        if first:
            deadline = time.monotonic() + HOLD_LIMIT
            while not self._released.is_set() and time.monotonic() < deadline:
                if await request.is_disconnected():
                    call.caller_gone = True
                    return Response(status_code=499)
                await asyncio.sleep(0.05)
            return JSONResponse({"detail": "released unanswered"}, status_code=503)
        call.answered = True
        return JSONResponse({"version": self.version})

    def app(self) -> Starlette:
        """The ASGI app to serve."""
        return Starlette(
            routes=[Route("/internal/tenants/{tenant_id}/migrate", self._migrate, methods=["POST"])]
        )
