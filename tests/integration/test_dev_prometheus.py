"""`make dev`'s Prometheus for real: the `prometheus` binary started as make dev starts it, with
the rendered configuration, scraping two tiny HTTP servers in the API's and the worker's place
until both targets are up, with the alert rules loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from devstack.dev import REPO_ROOT, DevSettings, make_plan, start_prometheus
from devstack.supervisor import Stack
from tenancy.settings import Settings
from tests.support.alert_rules import load_rules, required_binary
from tests.support.polling import eventually
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.usefixtures("clean_env")


def _metrics_app(body: str) -> Starlette:
    async def metrics(_: Request) -> PlainTextResponse:
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/metrics", metrics)])


async def test_make_devs_prometheus_scrapes_the_api_and_the_worker_with_the_rules_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    required_binary("prometheus")
    api_body = 'platform_api_requests_total{method="GET",route="/healthz",status="200"} 3\n'
    worker_body = "platform_outbox_oldest_seconds 0\nplatform_outbox_relay_leader 1\n"
    with (
        serve(_metrics_app(api_body)) as api_url,
        serve(_metrics_app(worker_body)) as worker_url,
    ):
        monkeypatch.setenv("PLATFORM_API_PORT", api_url.rsplit(":", 1)[1])
        monkeypatch.setenv("PLATFORM_WORKER_METRICS_ADDRESS", worker_url.removeprefix("http://"))
        dev = DevSettings(data_dir=tmp_path / "devdata", prometheus_port=free_port())
        plan = make_plan(dev, Settings())
        assert plan.prometheus is not None
        stack = Stack(tmp_path / "run", REPO_ROOT, log_dir=tmp_path / "logs")
        try:
            start_prometheus(stack, plan)
            async with httpx.AsyncClient(base_url=plan.prometheus.url, trust_env=False) as http:

                async def targets() -> dict[str, tuple[str, str]]:
                    answer = (await http.get("/api/v1/targets")).json()["data"]
                    return {
                        t["labels"]["job"]: (t["labels"]["instance"], t["health"])
                        for t in answer["activeTargets"]
                    }

                seen = await eventually(
                    targets,
                    lambda found: (
                        all(health == "up" for _, health in found.values()) and len(found) == 2
                    ),
                    timeout=60,
                    interval=0.5,
                )
                rules: dict[str, Any] = (await http.get("/api/v1/rules")).json()["data"]
            assert seen == {
                "platform-api": (api_url.removeprefix("http://"), "up"),
                "platform-worker": (worker_url.removeprefix("http://"), "up"),
            }
            loaded = {rule["name"] for group in rules["groups"] for rule in group["rules"]}
            assert loaded == {rule.name for rule in load_rules()}
            assert (tmp_path / "devdata" / "prometheus.yml").is_file()
            assert (tmp_path / "run" / "prometheus.pid").is_file()
        finally:
            stack.stop_all()
        assert list((tmp_path / "run").glob("*.pid")) == []
