"""The tenant pages over plain HTTP on the real stack (faster than the browser): the provision
form's refusals, the live fragments, the 404 page, links to the Temporal Web UI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import DELETE_SCOPE, READ_SCOPE, WRITE_SCOPE
from api.console.session import SESSION_COOKIE, csrf_token_for
from api.main import create_app
from devstack.tokens import mint
from tenancy.settings import Settings
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@dataclass
class Browserless:
    """The console over plain HTTP: a client carrying the session cookie, and the session's
    CSRF token for forms."""

    http: httpx.AsyncClient
    csrf: str

    async def get(self, path: str, **options: Any) -> httpx.Response:
        """GET a console URL."""
        return await self.http.get(path, **options)

    async def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        """POST a form, with the session's CSRF token."""
        return await self.http.post(path, data={"csrf_token": self.csrf} | form)


@asynccontextmanager
async def signed_in(
    client: Client, settings: Settings, keys_dir: Path
) -> AsyncIterator[Browserless]:
    """Worker + API, and the console signed in as an operator holding every tenant scope."""
    token = mint(
        keys_dir / "idp.pem",
        subject="operator",
        scopes=(WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE),
        audience="platform-service",
    )
    async with running_worker(client, settings):
        with serve(create_app(settings)) as base_url:
            async with httpx.AsyncClient(
                base_url=base_url, cookies={SESSION_COOKIE: token}, timeout=30
            ) as http:
                yield Browserless(http, csrf_token_for(token))


async def active_tenant(http: Browserless, tenant_id: str) -> None:
    """Provision through the console's form and wait until the tenant's page says ACTIVE."""
    answer = await http.post(
        "/console/tenants",
        {
            "id": tenant_id,
            "name": "Pages Ltd",
            "storageMode": "SCHEMA",
            "slaTier": "BASIC",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/tenants/{tenant_id}"
    await eventually(
        lambda: http.get(f"/console/tenants/{tenant_id}?fragment=live"),
        lambda page: 'id="tenant-status">ACTIVE<' in page.text,
    )


async def test_a_refused_provisioning_shows_the_form_again_with_the_reason(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    service: tuple[ScriptedService, str],
) -> None:
    tenant_id = unique_id("pf")
    settings = make_settings(("backend-service", service[1]))
    async with signed_in(temporal_client, settings, keys_dir) as http:
        blank = await http.post(
            "/console/tenants",
            {
                "id": tenant_id,
                "name": "   ",
                "storageMode": "DATABASE",
                "slaTier": "PREMIUM",
            },
        )
        assert blank.status_code == 422
        assert 'role="alert" id="provision-error">Not provisioned:' in blank.text
        assert "name:" in blank.text
        # What was typed is still there.
        assert f'name="id" value="{tenant_id}"' in blank.text
        assert '<option value="DATABASE" selected>' in blank.text
        assert '<option value="PREMIUM" selected>' in blank.text

        await active_tenant(http, tenant_id)
        again = await http.post(
            "/console/tenants",
            {
                "id": tenant_id,
                "name": "Twice",
                "storageMode": "SCHEMA",
                "slaTier": "BASIC",
            },
        )
        assert again.status_code == 409
        assert "Not provisioned:" in again.text
        assert 'value="Twice"' in again.text


async def test_live_fragments_missing_tenants_and_temporal_links(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    service: tuple[ScriptedService, str],
) -> None:
    tenant_id = unique_id("lf")
    ui = "https://temporal.internal/ui/"
    settings = make_settings(("backend-service", service[1]), temporal_ui_url=ui)
    async with signed_in(temporal_client, settings, keys_dir) as http:
        await active_tenant(http, tenant_id)

        page = await http.get(f"/console/tenants/{tenant_id}")
        assert page.status_code == 200
        assert page.text.lstrip().startswith("<!doctype html>")
        assert (
            f'href="https://temporal.internal/ui/namespaces/default/workflows/'
            f'tenant-provision-{tenant_id}"' in page.text
        )
        assert "tenant-delete-" not in page.text
        # The live part alone, by query or by the header console.js sends; nothing in flight,
        # so it no longer asks to be polled.
        for fragment in (
            await http.get(f"/console/tenants/{tenant_id}?fragment=live"),
            await http.get(f"/console/tenants/{tenant_id}", headers={"X-Console-Fragment": "1"}),
        ):
            assert fragment.status_code == 200
            assert fragment.text.lstrip().startswith('<div id="tenant-live"')
            assert "<html" not in fragment.text
            assert "data-poll=" not in fragment.text
            assert "CREATED" in fragment.text
        rows = await http.get(f"/console/tenants?idPrefix={tenant_id}&fragment=rows")
        assert rows.text.lstrip().startswith('<div id="tenant-rows"')
        assert re.search(rf'href="/console/tenants/{tenant_id}"', rows.text)

        refused = await http.get("/console/tenants?idPrefix=no-dashes")
        assert refused.status_code == 422
        assert 'class="error" role="alert">' in refused.text
        assert "idPrefix" in refused.text

        for missing in ("no_such_tenant", "Not-An-Id"):
            answer = await http.get(f"/console/tenants/{missing}")
            assert answer.status_code == 404
            assert "Tenant not found" in answer.text

    async with signed_in(temporal_client, make_settings(), keys_dir) as http:
        page = await http.get(f"/console/tenants/{tenant_id}")
        assert page.status_code == 200
        assert "Temporal Web UI" not in page.text
