"""The Servers page in a real browser against the real stack (API, worker, three PostgreSQL
servers): the table with its fill bars and the worker's checks, a cordon and an uncordon from
the page, the tenant page linking to its server, and no buttons for a read-only token. A
metadata database of the test's own (`fleet_stage`): the session's `default` server is never
cordoned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Dialog, Page, expect

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE
from tenancy.models import SlaTier, StorageMode
from tests.conftest import unique_id
from tests.support.drains import stranded_fleet
from tests.support.moves import move_stage
from tests.support.polling import eventually
from tests.support.server_api import SERVERS, fleet_settings, place_tenants
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def accept_next_dialog(page: Page) -> None:
    """Say yes to the next window.confirm."""

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)


async def test_servers_are_cordoned_and_uncordoned_from_the_console(
    open_console: Callable[..., Any], fleet_stage: FleetStage
) -> None:
    settings = fleet_settings(fleet_stage)
    [tenant_id] = await place_tenants(settings, "web_srv", 1, SlaTier.PREMIUM, StorageMode.SCHEMA)
    async with open_console(settings) as console:
        page = console.page
        await console.sign_in(
            console.token(READ_SCOPE, SERVERS_WRITE_SCOPE, subject="olga"), then="/console/servers"
        )
        await expect(page.get_by_role("heading", name="Storage servers")).to_be_visible()
        rows = page.locator("table.servers tbody tr")
        await expect(rows).to_have_count(3)
        assert [await row.get_attribute("id") for row in await rows.all()] == [
            f"server-{name}" for name in SERVERS
        ]
        await expect(page.get_by_role("meter", name="pg-c: 1 of 2 tenants")).to_be_visible()

        # The running worker checks every server at start; the page shows what it recorded.
        async def checked() -> str:
            await page.reload()
            text: str = await page.locator("#server-pg-b").inner_text()
            return text

        await eventually(checked, lambda text: "checked" in text and "up" in text)

        await page.get_by_label("Reason for pg-a (optional)").fill("disk swap")
        accept_next_dialog(page)
        await page.get_by_role("button", name="Cordon", exact=True).first.click()
        await expect(page.get_by_role("status")).to_contain_text("Storage server pg-a cordoned")
        row = page.locator("#server-pg-a")
        await expect(row.locator(".status").first).to_have_text("CORDONED")
        await expect(row).to_contain_text("disk swap")
        await expect(row).to_contain_text("by olga")
        await expect(row.get_by_role("button", name="Uncordon")).to_be_visible()
        await console.screenshot("servers")
        await page.set_viewport_size({"width": 390, "height": 844})
        await console.screenshot("servers-narrow")
        await page.set_viewport_size({"width": 1280, "height": 900})

        accept_next_dialog(page)
        await row.get_by_role("button", name="Uncordon").click()
        await expect(page.get_by_role("status")).to_contain_text("Storage server pg-a uncordoned")
        await expect(page.locator("#server-pg-a .status").first).to_have_text("ACTIVE")

        await console.open(f"/console/tenants/{tenant_id}")
        await page.get_by_role("link", name="pg-c").click()
        await page.wait_for_url(console.url("/console/servers#pg-c"))

        await console.sign_in(console.token(READ_SCOPE, subject="rita"), then="/console/servers")
        await expect(page.locator("table.servers tbody tr")).to_have_count(3)
        await expect(page.get_by_role("button", name="Cordon", exact=True)).to_have_count(0)
        await expect(page.get_by_role("button", name="Uncordon")).to_have_count(0)


async def test_a_server_is_drained_and_its_drain_cancelled_from_the_console(
    open_console: Callable[..., Any], fleet_stage: FleetStage
) -> None:
    settings, source, _ = stranded_fleet(fleet_stage)
    tenant_id = unique_id("web_drn")
    async with move_stage(settings) as stage:
        await stage.active(tenant_id)
    async with open_console(settings) as console:
        page = console.page
        await console.sign_in(
            console.token(READ_SCOPE, SERVERS_WRITE_SCOPE, subject="olga"), then="/console/servers"
        )
        row = page.locator(f"#server-{source}")
        await row.get_by_label("Moves at once").fill("2")
        accept_next_dialog(page)
        await row.get_by_role("button", name="Drain", exact=True).click()
        await expect(page.get_by_role("status")).to_contain_text(
            f"Storage server {source} is draining"
        )

        # The tenant has nowhere to go: the drain's run ends with it left, shown on reload.
        async def progress() -> str:
            await page.reload()
            text: str = await page.locator(f"#drain-{source}").inner_text()
            return text

        await eventually(progress, lambda text: "1 failed" in text and "ended" in text)
        row = page.locator(f"#server-{source}")
        await expect(row.locator(".status").first).to_have_text("DRAINING")
        await expect(
            row.get_by_role("meter", name=f"drain of {source}: 1 of 1 tenants done")
        ).to_be_visible()
        await row.get_by_text("1 not moved").click()
        await expect(row.get_by_role("link", name=tenant_id)).to_be_visible()
        await expect(row.get_by_role("button", name="Cordon", exact=True)).to_have_count(0)
        await console.screenshot("servers-draining")

        accept_next_dialog(page)
        await row.get_by_role("button", name="Cancel drain").click()
        await expect(page.get_by_role("status")).to_contain_text(
            f"The drain of {source} is cancelled"
        )
        await expect(page.locator(f"#server-{source} .status").first).to_have_text("CORDONED")
