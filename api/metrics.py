"""Prometheus metrics of the API: requests by route template and status, and latency.

`install_metrics(app)` gives the app its own registry (two apps in one process, as in
tests, never share counters), a middleware that records every HTTP request, and
`GET /metrics` in the Prometheus text format. Routes are labelled by their template
(`/api/tenants/{tenant_id}`), never by the raw path, so tenant ids cannot explode the
number of series; static files by their mount (`/console/static/{path}`); a request no route
matches is labelled `unmatched`.

Served by several worker processes (`PLATFORM_API_WORKERS`, `api.serve` sets
`PROMETHEUS_MULTIPROC_DIR`), every process writes its counts to files in that folder and
`/metrics` adds them all up (prometheus_client's multiprocess mode); the `process_*`,
`python_*` and `python_gc_*` series of one process are then left out, since a scrape would
show whichever process answered it.
"""

from __future__ import annotations

import os
import time
import uuid

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_log = structlog.get_logger("platform.api.access")
METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# prometheus_client's multiprocess mode: the folder every worker process counts into.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class RequestMetrics:
    """The API's request counter and latency histogram, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "platform_api_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "platform_api_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            registry=registry,
        )


def _route_template(scope: Scope) -> str:
    # The router stores the route it matched (or that matched all but the method) in scope.
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    # Static files (the console's, the API docs') are mounted apps: labelled by their mount.
    if isinstance(scope.get("endpoint"), StaticFiles):
        return f"{scope.get('root_path', '')}/{{path}}"
    return UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware: records each HTTP request once its response has started, as
    metric samples and one structured log line (route, status, duration_ms, tenant_id)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call; only HTTP requests are measured."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        # Every log line of this request carries its id.
        tokens = structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:16])

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = _route_template(scope)
            elapsed = time.perf_counter() - started
            self._metrics.requests.labels(method, route, str(status)).inc()
            self._metrics.duration.labels(method, route).observe(elapsed)
            tenant_id = scope.get("path_params", {}).get("tenant_id")
            _log.info(
                "request",
                # Which worker process served it (PLATFORM_API_WORKERS).
                pid=os.getpid(),
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 1),
                **({"tenant_id": tenant_id} if tenant_id else {}),
            )
            structlog.contextvars.reset_contextvars(**tokens)


def install_metrics(app: FastAPI) -> CollectorRegistry:
    """Measure every request of `app` and serve `GET /metrics`; returns the app's registry.

    Call once in `create_app()`, before the app serves (middleware cannot be added later).
    """
    registry = CollectorRegistry()
    shared = os.environ.get(MULTIPROCESS_DIR_ENV)
    if shared is None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics(registry))

    def every_process() -> bytes:
        # A fresh registry per scrape, as prometheus_client's multiprocess mode asks.
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=shared)  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    async def metrics(_: Request) -> Response:
        body = generate_latest(registry) if shared is None else every_process()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    app.state.metrics_registry = registry
    return registry
