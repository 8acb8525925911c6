"""Free text is printable: every field an operator types refuses a character that is not
(`str.isprintable()`: C1 controls, line separators, bidi overrides) with a 422 naming the field,
and text stored before that rule is shown escaped by platformctl (tables and JSON) and by the
console, never raw (a right-to-left override would reorder the audit table around it).

Against the real API and PostgreSQL; the stored rows are written straight into the database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from typer.testing import CliRunner

from cli.main import app as platformctl
from tenancy.settings import DownstreamService, Settings
from tests.conftest import unique_id
from tests.support.api_client import api_client, fields_of, token_of
from tests.support.logs import platform_logs_to
from tests.support.stored_text import (
    ESCAPES,
    HOSTILE_CHARACTERS,
    hostile,
    insert_hostile_tenant,
    raw_unprintable,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

runner = CliRunner()
JSON_ESCAPES = tuple(f"\\u{ord(c):04x}" for c in HOSTILE_CHARACTERS)


@dataclass
class Api:
    """The API of this module, and what platformctl needs to reach it."""

    http: httpx.AsyncClient
    token: str
    database_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(
    platform_db_url: str,
    platform_role_urls: tuple[str, str],
    temporal_client: Client,
    keys_dir: Path,
) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=platform_role_urls[0],
        storage_database_url=platform_role_urls[1],
        task_queue=f"printable-{uuid.uuid4().hex[:8]}",
        temporal_address=temporal_client.service_client.config.target_host,
        signing_key_file=keys_dir / "platform-signing.pem",
        auth_public_key_file=keys_dir / "idp.pem",
        # Never called: no request here provisions or rolls out anything.
        downstream_services=(DownstreamService(name="backend-service", base_url="http://x"),),
        events_backend="none",
    )
    # The server's log lines go to the real stderr, not into CliRunner's stdout.
    assert sys.__stderr__ is not None
    with platform_logs_to(sys.__stderr__):
        async with api_client(settings, keys_dir, subject="operator") as http:
            yield Api(http, token_of(keys_dir, "operator"), platform_db_url)


def _tenant_body(text: str) -> dict[str, Any]:
    return {"id": unique_id(), "name": text, "storageMode": "SCHEMA", "slaTier": "BASIC"}


# The field a 422 names (a trailing space tells two routes' `reason` apart): the route, and how
# its request carries the text. The character sits inside the text: names are trimmed, and
# U+0085 and U+2028 are whitespace to str.strip().
FREE_TEXT_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("POST /api/tenants", lambda t: {"json": _tenant_body(f"Ac{t}me")}),
    "reason": ("DELETE /api/tenants/nobody_here", lambda t: {"params": {"reason": f"x{t}y"}}),
    "reason ": (
        "POST /api/tenants/nobody_here/restore",
        lambda t: {"params": {"reason": f"x{t}y"}},
    ),
    "waves.0.name": (
        "POST /api/rollouts",
        lambda t: {"json": {"waves": [{"name": f"can{t}ary"}]}},
    ),
    "services.0": ("POST /api/rollouts", lambda t: {"json": {"services": [f"back{t}end"]}}),
    "selector.tenantIds.0": (
        "POST /api/rollouts",
        lambda t: {"json": {"selector": {"tenantIds": [f"ac{t}me"]}}},
    ),
}


@pytest.mark.parametrize("character", HOSTILE_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("field", list(FREE_TEXT_FIELDS))
async def test_free_text_with_an_unprintable_character_is_422_naming_the_field(
    api: Api, field: str, character: str
) -> None:
    route, carry = FREE_TEXT_FIELDS[field]
    method, path = route.split(" ")

    answer = await api.http.request(method, path, **carry(character))

    assert answer.status_code == 422, answer.text
    assert fields_of(answer) == {field.strip()}, answer.text
    assert raw_unprintable(answer.text) == [], "the problem echoes the character raw"


async def test_printable_unicode_text_is_still_taken(api: Api) -> None:
    answer = await api.http.delete(
        "/api/tenants/nobody_here", params={"reason": "Kündigung: Vertrag endet — 終了 ✓"}
    )

    assert answer.status_code == 404, answer.text


async def _platformctl(api: Api, *args: str) -> str:
    env: dict[str, str | None] = {
        "PLATFORM_URL": str(api.http.base_url).rstrip("/"),
        "PLATFORM_TOKEN": api.token,
        # Wide enough that no column folds, whatever the terminal running the suite.
        "COLUMNS": "300",
        "FORCE_COLOR": None,
        "TTY_COMPATIBLE": None,
        "TTY_INTERACTIVE": None,
    }
    result = await asyncio.to_thread(
        runner.invoke, platformctl, list(args), env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.mark.parametrize("output", ["table", "json"])
async def test_platformctl_shows_stored_unprintable_text_escaped(api: Api, output: str) -> None:
    tenant_id = unique_id("hostile")
    insert_hostile_tenant(api.database_url, tenant_id)

    shown = await _platformctl(api, "tenants", "get", tenant_id, "--output", output)
    trail = await _platformctl(api, "tenants", "events", tenant_id, "--output", output)

    escapes = ESCAPES if output == "table" else JSON_ESCAPES
    for text in (shown, trail):
        assert raw_unprintable(text) == [], text
        for escape in escapes:
            assert escape in text, (escape, text)
    if output == "json":
        # JSON escapes: the document still holds the stored text.
        assert json.loads(shown)["name"] == hostile("Evil")
        assert json.loads(trail)["items"][-1]["reason"] == hostile("audit")


async def test_the_console_shows_stored_unprintable_text_escaped(api: Api) -> None:
    tenant_id = unique_id("hostile")
    insert_hostile_tenant(api.database_url, tenant_id)

    page = await api.http.get(f"/console/tenants/{tenant_id}")
    listed = await api.http.get("/console/tenants", params={"idPrefix": tenant_id})

    assert page.status_code == 200, page.text
    assert listed.status_code == 200, listed.text
    assert tenant_id in listed.text
    for html in (page.text, listed.text):
        assert raw_unprintable(html) == [], html
        for escape in ESCAPES:
            assert escape in html, escape
