"""The console's rollout and services pages as HTML over HTTP (no browser) against the real
stack: a failed rollout's failures and its retry, a refusal the API decides, the live
fragments, the Temporal Web UI link, and ids that name no rollout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE
from api.console.session import SESSION_COOKIE, csrf_token_for
from api.main import create_app
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tests.conftest import running_worker, unique_id
from tests.integration.test_api import token_for
from tests.support.fleet import seed_fleet
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

UI = "http://temporal-ui.example:8233"


async def test_a_failed_rollout_shows_its_failures_and_is_retried_from_its_page(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v1")
    svc = f"svc-{unique_id('p')[-10:]}"
    with serve(service.app()) as url:
        settings = make_settings(
            (svc, url),
            migration_max_attempts=2,
            migration_initial_interval=timedelta(milliseconds=50),
            temporal_ui_url=UI,
        )
        ids = await seed_fleet(settings, tenants, unique_id("pages")[:20], 3)
        service.version = "v2"
        service.script(ids[0], 400)
        token = token_for(keys_dir, "pat", READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE)
        csrf = {"csrf_token": csrf_token_for(token)}
        async with running_worker(temporal_client, settings):
            with serve(create_app(settings)) as base:
                async with (
                    httpx.AsyncClient(
                        base_url=base, headers={"Authorization": f"Bearer {token}"}
                    ) as api,
                    httpx.AsyncClient(
                        base_url=base, headers={"Cookie": f"{SESSION_COOKIE}={token}"}
                    ) as console,
                ):
                    started = await api.post(
                        "/api/rollouts",
                        json={"selector": {"tenantIds": ids}, "maxFailureRatio": 1},
                    )
                    assert started.status_code == 202, started.text
                    rid = started.json()["id"]
                    await _wait(api, rid, "FAILED")

                    page = await console.get(f"/console/rollouts/{rid}")
                    live = await console.get(f"/console/rollouts/{rid}?fragment=live")
                    failed_only = await console.get(
                        f"/console/rollouts/{rid}?fragment=tenants&status=FAILED"
                    )
                    listed = await console.get("/console/rollouts?fragment=list")
                    refused = await console.post(f"/console/rollouts/{rid}/pause", data=csrf)

                    service.script(ids[0], 200)
                    retried = await console.post(f"/console/rollouts/{rid}/retry-failed", data=csrf)
                    again = await _wait(api, rid, "SUCCEEDED")
                    services = await console.get("/console/services")
                    malformed = await console.get("/console/rollouts/not-an-id")
                    unknown = await console.get("/console/rollouts/0123456789ab")

    assert page.status_code == 200, page.text
    html = page.text
    assert f'<a href="/console/tenants/{ids[0]}">{ids[0]}</a>' in html
    assert "scripted failure 400" in html
    assert 'id="action-retry-failed"' in html
    assert 'id="action-pause"' not in html
    assert "data-poll" not in html  # finished: nothing polls
    assert f'href="{UI}/namespaces/{temporal_client.namespace}/workflows/rollout-{rid}"' in html

    assert live.status_code == 200
    assert live.text.lstrip().startswith('<div id="rollout-live"')
    assert "<html" not in live.text
    assert failed_only.text.count("/console/tenants/") == 1
    assert rid in listed.text

    assert refused.status_code == 409, refused.text
    assert "Could not pause the rollout" in refused.text

    assert retried.status_code == 303, retried.text
    assert retried.headers["location"] == f"/console/rollouts/{rid}"
    assert again["passNumber"] == 2
    assert f'id="{svc}"' in services.text
    assert "<code>v2</code>" in services.text
    assert malformed.status_code == 404
    assert unknown.status_code == 404
    assert "Rollout not found" in unknown.text


async def _wait(api: httpx.AsyncClient, rollout_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/rollouts/{rollout_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda r: r.get("status") == status, timeout=60)
