"""A tenant's move from its console page in a real browser, on the real stack with a worker and
two real PostgreSQL servers (tests.support.move_fleet): the move form offers the ACTIVE servers
other than the tenant's own (or placement), posts the move, the page follows MOVING with the
move's phase live, and "Cancel move" rolls it back. The target is held, so the move waits in
PREPARING while the page is looked at."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Dialog, Page, expect

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from tests.browser.conftest import Console
from tests.conftest import unique_id
from tests.support.move_fleet import (
    Services,
    actions,
    other_server,
    provision,
    scripted_services,
    target_held,
    tenant_becomes,
    two_server_settings,
)
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MOVER = (READ_SCOPE, WRITE_SCOPE, SERVERS_WRITE_SCOPE)


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with scripted_services() as found:
        yield found


def accept_next_dialog(page: Page) -> None:
    """Say yes to the next window.confirm."""

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)


def api_of(console: Console) -> httpx.AsyncClient:
    """The stack's API as an operator who may move tenants."""
    return httpx.AsyncClient(
        base_url=console.base_url,
        timeout=30,
        headers={"Authorization": f"Bearer {console.token(*MOVER)}"},
    )


async def test_a_move_is_asked_followed_live_and_cancelled_from_the_tenant_page(
    open_console: Callable[..., Any], fleet_stage: FleetStage, services: Services
) -> None:
    settings = two_server_settings(fleet_stage, services)
    tenant_id = unique_id("wmv")
    async with open_console(settings) as console:
        page = console.page
        async with api_of(console) as api:
            source = (await provision(api, tenant_id))["storageServer"]
            target = other_server(source)
            await console.sign_in(
                console.token(*MOVER, subject="olga"), then=f"/console/tenants/{tenant_id}"
            )
            choices = page.get_by_label("Target server")
            assert await choices.locator("option").all_inner_texts() == [
                "Placement in its pool",
                target,
            ]
            async with target_held(fleet_stage, tenant_id, target):
                await choices.select_option(target)
                await page.get_by_label("Reason for the move").fill("noisy neighbour")
                accept_next_dialog(page)
                await page.get_by_role("button", name="Move tenant").click()
                await expect(page.get_by_role("status")).to_contain_text(
                    f"Move of {tenant_id} started"
                )
                await expect(page.locator("#tenant-status")).to_have_text("MOVING")
                move = page.locator("#tenant-move")
                await expect(move.locator("#move-phase")).to_have_text("PREPARING")
                await expect(move).to_contain_text(f"{source} → {target}")
                await expect(move).to_contain_text("noisy neighbour")
                await expect(page.get_by_role("button", name="Move tenant")).to_have_count(0)
                await console.screenshot("tenant-moving")
                accept_next_dialog(page)
                await page.get_by_role("button", name="Cancel move").click()
                await expect(page.get_by_role("status")).to_contain_text(
                    f"Cancel of {tenant_id}'s move requested"
                )
            # The target let go: the run rolls back, and the page follows it without a reload.
            await expect(page.locator("#tenant-status")).to_have_text("ACTIVE", timeout=60_000)
            await expect(page.locator("#tenant-move")).to_have_count(0)
            await expect(page.get_by_role("button", name="Move tenant")).to_be_visible()
            after = await tenant_becomes(api, tenant_id, "ACTIVE")
            trail = await actions(api, tenant_id)

            # Without servers:write there is no move form.
            await console.sign_in(
                console.token(READ_SCOPE, WRITE_SCOPE, subject="wanda"),
                then=f"/console/tenants/{tenant_id}",
            )
            await expect(page.locator("#tenant-status")).to_have_text("ACTIVE")
            await expect(page.get_by_role("button", name="Move tenant")).to_have_count(0)

    assert (after["storageServer"], after["move"]) == (source, None)
    assert ("MOVE_REQUESTED", f"{source} -> {target}: noisy neighbour") in trail
    assert [a for a, _ in trail if a in ("MOVE_CANCELLED", "MOVE_FAILED", "TENANT_MOVED")] == [
        "MOVE_CANCELLED"
    ]
