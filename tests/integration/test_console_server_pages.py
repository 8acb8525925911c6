"""The console's Servers page over plain HTTP against the real API and PostgreSQL servers: the
table, cordon and uncordon forms (CSRF-checked, shown only to `servers:write`), a forged form
refused by the API, and the tenant page naming its server. A metadata database of the test's
own (`fleet_stage`): the cordons must never reach the session's shared `default` server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE
from api.console.session import CSRF_FIELD, SESSION_COOKIE, csrf_token_for
from tenancy.models import SlaTier, StorageMode
from tests.support.api_client import api_client, token_of
from tests.support.server_api import (
    SERVERS,
    URL_SECRET,
    fleet_settings,
    place_tenants,
    run_checks,
)
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PAGE = "/console/servers"


def session(api: httpx.AsyncClient, token: str) -> httpx.AsyncClient:
    """A browser's view of the console: the session cookie of `token`, no bearer header."""
    return httpx.AsyncClient(base_url=api.base_url, cookies={SESSION_COOKIE: token}, timeout=30)


async def post_form(
    http: httpx.AsyncClient, token: str, path: str, form: dict[str, str]
) -> httpx.Response:
    """A form posted by the session holding `token`, with its CSRF token."""
    return await http.post(path, data={CSRF_FIELD: csrf_token_for(token)} | form)


async def test_the_servers_page_cordons_and_uncordons_for_servers_write_only(
    fleet_stage: FleetStage, keys_dir: Path
) -> None:
    settings = fleet_settings(fleet_stage)
    [tenant_id] = await place_tenants(settings, "con_srv", 1, SlaTier.PREMIUM, StorageMode.SCHEMA)
    await run_checks(settings)
    operator = token_of(keys_dir, "olga", READ_SCOPE, SERVERS_WRITE_SCOPE)
    reader = token_of(keys_dir, "rita", READ_SCOPE)
    async with (
        api_client(settings, keys_dir) as api,
        session(api, operator) as olga,
        session(api, reader) as rita,
        httpx.AsyncClient(base_url=api.base_url) as nobody,
    ):
        page = await olga.get(PAGE)
        forged_csrf = await olga.post(f"{PAGE}/pg-a/cordon", data={CSRF_FIELD: "no", "reason": "x"})
        cordoned = await post_form(olga, operator, f"{PAGE}/pg-a/cordon", {"reason": "disk swap"})
        after = await olga.get(PAGE)
        again = await post_form(olga, operator, f"{PAGE}/pg-a/cordon", {"reason": ""})
        read_only = await rita.get(PAGE)
        refused = await post_form(rita, reader, f"{PAGE}/pg-a/uncordon", {"reason": ""})
        state = (await api.get("/api/storage-servers/pg-a")).json()
        events = (await api.get("/api/storage-servers/pg-a/events")).json()["items"]
        uncordoned = await post_form(olga, operator, f"{PAGE}/pg-a/uncordon", {"reason": ""})
        final = (await api.get("/api/storage-servers/pg-a")).json()
        tenant_page = await rita.get(f"/console/tenants/{tenant_id}")
        anonymous = await nobody.get(PAGE)

    assert page.status_code == 200, page.text
    rows = re.findall(r'<tr id="server-([a-z0-9-]+)"', page.text)
    assert rows == list(SERVERS)
    assert page.text.count("<meter") == 3
    assert 'aria-label="pg-c: 1 of 2 tenants"' in page.text
    assert page.text.count(">Cordon</button>") == 3
    assert "Uncordon" not in page.text
    assert "up" in page.text
    assert URL_SECRET not in page.text
    assert 'href="/console/servers" aria-current="page"' in page.text

    assert forged_csrf.status_code == 403
    assert cordoned.status_code == 303
    assert cordoned.headers["location"] == f"{PAGE}#pg-a"
    assert "Storage server pg-a cordoned" in after.text
    assert re.search(r'id="server-pg-a".*?CORDONED.*?disk swap', after.text, re.S)
    assert re.search(r'id="server-pg-a".*?>Uncordon<', after.text, re.S)
    assert again.status_code == 409
    assert "already CORDONED" in again.text

    assert read_only.status_code == 200
    assert "Cordon</button>" not in read_only.text
    assert "Uncordon</button>" not in read_only.text
    assert refused.status_code == 403
    assert "servers:write" in refused.text
    assert state["state"] == "CORDONED"
    assert (state["stateReason"], state["stateChangedBy"]) == ("disk swap", "olga")
    assert [(e["type"], e["actor"]) for e in events] == [("CORDONED", "olga")]

    assert uncordoned.status_code == 303
    assert final["state"] == "ACTIVE"
    assert tenant_page.status_code == 200, tenant_page.text
    assert re.search(r"Storage server</dt>\s*<dd>.*?pg-c", tenant_page.text, re.S)
    assert anonymous.status_code == 303
