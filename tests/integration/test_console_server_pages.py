"""The console's Servers page over plain HTTP against the real API and PostgreSQL servers: the
table, cordon and uncordon forms (CSRF-checked, shown only to `servers:write`), a forged form
refused by the API, and the tenant page naming its server. A metadata database of the test's
own (`fleet_stage`): the cordons must never reach the session's shared `default` server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE
from api.console.session import CSRF_FIELD, SESSION_COOKIE, csrf_token_for
from tenancy.models import SlaTier, StorageMode
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.drains import drain_ends, stranded_fleet
from tests.support.moves import move_stage
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


async def test_the_servers_page_drains_shows_the_progress_and_cancels_the_drain(
    fleet_stage: FleetStage, keys_dir: Path, temporal_client: Client
) -> None:
    settings, source, full = stranded_fleet(fleet_stage)
    tenant_id = unique_id("con_drn")
    async with move_stage(settings) as stage:
        await stage.active(tenant_id)
    operator = token_of(keys_dir, "olga", READ_SCOPE, SERVERS_WRITE_SCOPE)
    reader = token_of(keys_dir, "rita", READ_SCOPE)
    async with (
        api_client(settings, keys_dir, temporal=temporal_client) as api,
        session(api, operator) as olga,
        session(api, reader) as rita,
    ):
        page = await olga.get(PAGE)
        invalid = await post_form(olga, operator, f"{PAGE}/{source}/drain", {"concurrency": "0"})
        drained = await post_form(olga, operator, f"{PAGE}/{source}/drain", {"concurrency": "2"})
        await drain_ends(api, source)
        after = await olga.get(PAGE)
        read_only = await rita.get(PAGE)
        cancelled = await post_form(olga, operator, f"{PAGE}/{source}/cancel-drain", {})
        final = await olga.get(PAGE)
        emptied = await post_form(olga, operator, f"{PAGE}/{full}/drain", {"concurrency": "4"})
        empty = await drain_ends(api, full)

    assert page.text.count('name="concurrency"') == 2
    assert page.text.count(">Drain</button>") == 2
    assert "Cancel drain" not in page.text
    assert invalid.status_code == 422
    assert "concurrency" in invalid.text
    assert drained.status_code == 303
    assert "is draining" in after.text
    row = re.search(rf'id="server-{source}".*?</tr>', after.text, re.S)
    assert row is not None
    assert "DRAINING" in row.group(0)
    assert "0 moved, 1 failed, 0 running of 1" in row.group(0)
    assert f'aria-label="drain of {source}: 1 of 1 tenants done"' in row.group(0)
    assert tenant_id in row.group(0)
    assert ">Drain again</button>" in row.group(0)
    assert ">Cancel drain</button>" in row.group(0)
    assert "Cordon</button>" not in row.group(0)
    assert "Cancel drain" not in read_only.text
    assert "0 moved, 1 failed" in read_only.text
    assert cancelled.status_code == 303
    assert f"The drain of {source} is cancelled" in final.text
    assert re.search(rf'id="server-{source}".*?CORDONED', final.text, re.S)
    assert emptied.status_code == 303
    assert empty["state"] == "DRAINED"
