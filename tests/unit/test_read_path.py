"""What the API's routes cost per request before their own work: no dependency of an `/api`
route is a plain function, which FastAPI would run on its thread pool (a hop to a thread and
back on every request)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.main import create_app
from tenancy.settings import Settings


def sync_dependencies(dependant: Dependant) -> list[str]:
    """The dependencies, at any depth, FastAPI would call in a worker thread."""
    found = []
    for sub in dependant.dependencies:
        call = sub.call
        target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
        if not inspect.iscoroutinefunction(target):
            found.append(getattr(call, "__qualname__", repr(call)))
        found += sync_dependencies(sub)
    return found


def api_routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def test_no_api_route_runs_a_dependency_on_the_thread_pool() -> None:
    app = create_app(Settings())
    routes = [r for r in api_routes(app.routes) if r.path.startswith("/api/")]
    assert any(r.path == "/api/tenants/{tenant_id}" for r in routes)

    threaded = {r.path: sync_dependencies(r.dependant) for r in routes}

    assert {path: deps for path, deps in threaded.items() if deps} == {}
