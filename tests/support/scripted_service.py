"""A downstream service whose answers a test scripts per tenant, recording every call."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Call:
    """One request the service received."""

    tenant_id: str
    idempotency_key: str | None
    body: dict[str, Any]


@dataclass
class ScriptedService:
    """Answers `POST /internal/tenants/{id}/migrate` with the next scripted status for that
    tenant (the last one repeats; 200 when nothing is scripted), and `DELETE
    /internal/tenants/{id}` (teardown) likewise from its own script and call list."""

    version: str = "0002"
    scripts: dict[str, list[int]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    teardown_scripts: dict[str, list[int]] = field(default_factory=dict)
    teardowns: list[Call] = field(default_factory=list)
    # Tenants whose migrate calls are held (recorded, then answered once the event is set).
    holds: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, tenant_id: str) -> threading.Event:
        """Hold the tenant's migrate calls until the returned event is set (at most 60 s)."""
        with self._lock:
            return self.holds.setdefault(tenant_id, threading.Event())

    def script(self, tenant_id: str, *statuses: int) -> None:
        """Answer the next calls for `tenant_id` with these statuses, in order."""
        with self._lock:
            self.scripts[tenant_id] = list(statuses)

    def script_teardown(self, tenant_id: str, *statuses: int) -> None:
        """Answer the next teardown calls for `tenant_id` with these statuses, in order."""
        with self._lock:
            self.teardown_scripts[tenant_id] = list(statuses)

    def teardowns_for(self, tenant_id: str) -> list[Call]:
        """The teardown calls received for one tenant, oldest first."""
        with self._lock:
            return [c for c in self.teardowns if c.tenant_id == tenant_id]

    async def _teardown(self, request: Request) -> JSONResponse:
        tenant_id = request.path_params["tenant_id"]
        body = await request.json()
        with self._lock:
            self.teardowns.append(Call(tenant_id, request.headers.get("Idempotency-Key"), body))
            script = self.teardown_scripts.get(tenant_id, [])
            status = script.pop(0) if len(script) > 1 else (script[0] if script else 200)
        if 200 <= status < 300:
            return JSONResponse({"tenantId": tenant_id, "dropped": []}, status_code=status)
        return JSONResponse({"detail": f"scripted failure {status}"}, status_code=status)

    def calls_for(self, tenant_id: str) -> list[Call]:
        """The calls received for one tenant, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.tenant_id == tenant_id]

    async def _migrate(self, request: Request) -> JSONResponse:
        tenant_id = request.path_params["tenant_id"]
        body = await request.json()
        with self._lock:
            self.calls.append(Call(tenant_id, request.headers.get("Idempotency-Key"), body))
            script = self.scripts.get(tenant_id, [])
            status = script.pop(0) if len(script) > 1 else (script[0] if script else 200)
            held = self.holds.get(tenant_id)
        if held is not None:
            await asyncio.to_thread(held.wait, 60)
        if 200 <= status < 300:
            return JSONResponse({"version": self.version}, status_code=status)
        return JSONResponse({"detail": f"scripted failure {status}"}, status_code=status)

    def app(self) -> Starlette:
        """The ASGI app to serve."""
        return Starlette(
            routes=[
                Route("/internal/tenants/{tenant_id}/migrate", self._migrate, methods=["POST"]),
                Route("/internal/tenants/{tenant_id}", self._teardown, methods=["DELETE"]),
            ]
        )
