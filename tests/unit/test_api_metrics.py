"""`install_metrics`: requests counted by route template and status, latency observed, and
`GET /metrics` in the Prometheus format, with one registry per app."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import structlog.testing
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import install_metrics


def tiny_app(static_dir: Path | None = None) -> FastAPI:
    app = FastAPI()
    if static_dir is not None:
        app.mount("/console/static", StaticFiles(directory=static_dir))
    router = APIRouter(prefix="/api/tenants")

    @router.get("/{tenant_id}")
    async def get_tenant(tenant_id: str) -> dict[str, str]:
        if tenant_id == "ghost":
            raise HTTPException(status_code=404)
        return {"id": tenant_id}

    @router.post("")
    async def create_tenant() -> dict[str, str]:
        return {"id": "new"}

    @router.get("/{tenant_id}/boom")
    async def boom(tenant_id: str) -> None:
        raise RuntimeError(f"bug for {tenant_id}")

    app.include_router(router)
    install_metrics(app)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`GET /metrics`, parsed: (sample name, labels) -> value."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests(method: str, route: str, status: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"method": method, "route": route, "status": status}
    return ("platform_api_requests_total", frozenset(labels.items()))


async def test_requests_are_counted_by_route_template_and_status() -> None:
    async with client(tiny_app()) as http:
        for tenant_id in ("acme", "globex", "initech"):
            assert (await http.get(f"/api/tenants/{tenant_id}")).status_code == 200
        assert (await http.get("/api/tenants/ghost")).status_code == 404
        assert (await http.post("/api/tenants")).status_code == 200
        assert (await http.delete("/api/tenants/acme")).status_code == 405
        assert (await http.get("/nowhere/acme")).status_code == 404
        assert (await http.get("/api/tenants/acme/boom")).status_code == 500
        samples = await scrape(http)

    assert samples[requests("GET", "/api/tenants/{tenant_id}", "200")] == 3
    assert samples[requests("GET", "/api/tenants/{tenant_id}", "404")] == 1
    assert samples[requests("POST", "/api/tenants", "200")] == 1
    assert samples[requests("DELETE", "/api/tenants/{tenant_id}", "405")] == 1
    assert samples[requests("GET", "unmatched", "404")] == 1
    assert samples[requests("GET", "/api/tenants/{tenant_id}/boom", "500")] == 1
    routes = {
        dict(labels).get("route") for name, labels in samples if name.startswith("platform_api")
    }
    assert not any(r and ("acme" in r or "globex" in r or "nowhere" in r) for r in routes)


async def test_static_files_are_counted_by_their_mount(tmp_path: Path) -> None:
    (tmp_path / "console.css").write_text("body {}")
    (tmp_path / "console.js").write_text("")
    async with client(tiny_app(tmp_path)) as http:
        assert (await http.get("/console/static/console.css")).status_code == 200
        assert (await http.get("/console/static/console.js")).status_code == 200
        assert (await http.get("/console/static/missing.js")).status_code == 404
        samples = await scrape(http)

    assert samples[requests("GET", "/console/static/{path}", "200")] == 2
    assert samples[requests("GET", "/console/static/{path}", "404")] == 1


async def test_latency_is_observed_per_route() -> None:
    async with client(tiny_app()) as http:
        await http.get("/api/tenants/acme")
        await http.get("/api/tenants/globex")
        samples = await scrape(http)

    labels = frozenset({"method": "GET", "route": "/api/tenants/{tenant_id}"}.items())
    assert samples[("platform_api_request_duration_seconds_count", labels)] == 2
    assert samples[("platform_api_request_duration_seconds_sum", labels)] > 0


async def test_each_app_has_its_own_registry() -> None:
    first, second = tiny_app(), tiny_app()
    async with client(first) as http:
        await http.get("/api/tenants/acme")
    async with client(second) as http:
        samples = await scrape(http)

    assert requests("GET", "/api/tenants/{tenant_id}", "200") not in samples
    assert first.state.metrics_registry is not second.state.metrics_registry


async def test_metrics_route_is_not_in_the_openapi_schema() -> None:
    async with client(tiny_app()) as http:
        schema = (await http.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


@pytest.mark.parametrize("method", ["BREW", "PROPFIND"])
async def test_unknown_methods_share_one_label(method: str) -> None:
    async with client(tiny_app()) as http:
        await http.request(method, "/api/tenants/acme")
        samples = await scrape(http)
    assert samples[requests("other", "/api/tenants/{tenant_id}", "405")] == 1


async def test_each_request_is_logged_once_with_route_status_duration_and_tenant() -> None:
    with structlog.testing.capture_logs() as logs:
        async with client(tiny_app()) as http:
            await http.get("/api/tenants/acme")
            await http.get("/api/tenants/ghost")
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert [(e["route"], e["status"], e.get("tenant_id")) for e in lines] == [
        ("/api/tenants/{tenant_id}", 200, "acme"),
        ("/api/tenants/{tenant_id}", 404, "ghost"),
    ]
    assert all(isinstance(e["duration_ms"], float) for e in lines)
