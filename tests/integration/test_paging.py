"""Keyset paging of `GET /api/tenants` against a real PostgreSQL: a row whose insert began
before the rows around it but committed after a client paged past its place is still listed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from api.auth import READ_SCOPE
from api.main import create_app
from devstack.tokens import mint
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
# Few rows of the shared database match, so the pages are short.
FILTER = {"status": "PROVISION_ERROR", "slaTier": "PREMIUM", "limit": "1"}


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    make_settings: Callable[..., Settings], keys_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    token = mint(
        keys_dir / "idp.pem", subject="pager", scopes=[READ_SCOPE], audience="platform-service"
    )
    with serve(create_app(make_settings())) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            yield http


INSERT = """
    INSERT INTO tenants (id, name, storage_mode, sla_tier, status, workflow_id, workflow_run_id)
    VALUES (%s, 'Late', 'SCHEMA', 'PREMIUM', 'PROVISION_ERROR', %s, 'run')
"""


async def page(api: httpx.AsyncClient, cursor: str | None) -> dict[str, Any]:
    params = FILTER | ({"cursor": cursor} if cursor else {})
    answer = await api.get("/api/tenants", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_row_committed_after_a_client_paged_past_it_is_not_skipped(
    api: httpx.AsyncClient, platform_db_url: str
) -> None:
    late, middle, last = unique_id("late"), unique_id("middle"), unique_id("last")
    async with await psycopg.AsyncConnection.connect(platform_db_url) as held:
        # Inserted first (earliest created_at), committed last.
        await held.execute(INSERT, (late, provision_workflow_id(late)))
        with psycopg.connect(platform_db_url, autocommit=True) as conn:
            for tenant_id in (middle, last):
                conn.execute(INSERT, (tenant_id, provision_workflow_id(tenant_id)))

        # A client pages, one row at a time, up to `middle` or to the end of the list; the
        # last page (no cursor) is one it will read again when it comes back.
        seen: list[str] = []
        resume: str | None = None
        while middle not in seen:
            body = await page(api, resume)
            if body["nextCursor"] is None:
                break
            seen += [t["id"] for t in body["items"]]
            resume = body["nextCursor"]
        await held.commit()

    # It goes on from where it stopped, until the end.
    while True:
        body = await page(api, resume)
        seen += [t["id"] for t in body["items"]]
        if body["nextCursor"] is None:
            break
        resume = body["nextCursor"]

    mine = [tenant_id for tenant_id in seen if tenant_id in {late, middle, last}]
    assert mine == [late, middle, last]
    assert len(seen) == len(set(seen))


async def test_positions_are_ordered_as_numbers_across_a_power_of_ten(
    api: httpx.AsyncClient, platform_db_url: str
) -> None:
    """Transaction ids grow past 99, 999, 9999, ...: the list must order them as numbers, as the
    cursor compares them, or a page skips the rows whose ids sort differently as text (here
    99 and 100, below any server's oldest running transaction, so both are listed)."""
    prefix = unique_id("digits")
    before, after = f"{prefix}_a", f"{prefix}_b"
    with psycopg.connect(platform_db_url, autocommit=True) as conn:
        for tenant_id, xid in ((before, "99"), (after, "100")):
            conn.execute(INSERT, (tenant_id, provision_workflow_id(tenant_id)))
            conn.execute("UPDATE tenants SET insert_xid = %s::xid8 WHERE id = %s", (xid, tenant_id))

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params = {"idPrefix": prefix, "limit": "1"} | ({"cursor": cursor} if cursor else {})
        answer = await api.get("/api/tenants", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [tenant["id"] for tenant in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [before, after]
