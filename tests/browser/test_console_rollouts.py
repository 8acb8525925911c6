"""Rollouts and services in the console, in a real browser against the real stack: a rollout
started from the form, followed live, paused and resumed from its page; what a read-only token
sees; a forged pause; the version spread afterwards.

The fleet is written straight into the tables (`seed_fleet`), and a `Gate` in front of the
scripted service holds calls, so the rollout stays RUNNING for as long as the test needs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from playwright.async_api import Dialog, Page, expect

from api.console.session import SESSION_COOKIE, csrf_token_for
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tests.browser.conftest import READ_ONLY
from tests.conftest import unique_id
from tests.faults.downstream import Gate
from tests.support.fleet import seed_fleet
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@asynccontextmanager
async def gated_service(
    make_settings: Callable[..., Settings], tenants: TenantRepository, count: int
) -> AsyncIterator[tuple[Settings, ScriptedService, Gate, list[str]]]:
    """Settings with one scripted service of this test's own name behind a gate, and `count`
    ACTIVE tenants at its version v1; the service answers v2 from now on."""
    service = ScriptedService(version="v1")
    gate = Gate()
    name = f"svc-{unique_id('c')[-10:]}"
    with serve(gate.wrap(service.app())) as url:
        settings = make_settings((name, url))
        ids = await seed_fleet(settings, tenants, unique_id("con")[:20], count)
        service.version = "v2"
        try:
            yield settings, service, gate, ids
        finally:
            gate.open()


def accept_next_dialog(page: Page) -> None:
    """Say yes to the next window.confirm."""

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)


async def mark_document(page: Page) -> None:
    """Mark the loaded document, so a test can tell a live update from a reload."""
    await page.evaluate("window.__notReloaded = true")


async def not_reloaded(page: Page) -> bool:
    """Whether the document marked by `mark_document` is still the one shown."""
    return bool(await page.evaluate("window.__notReloaded === true"))


async def test_a_rollout_started_from_the_form_is_followed_live_paused_and_resumed(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
) -> None:
    async with gated_service(make_settings, tenants, 4) as (settings, service, gate, ids):
        svc = settings.downstream_services[0].name
        # The canary (the oldest tenant) goes through; the rest wait at the gate.
        gate.close(ids[1:])
        async with open_console(settings) as console:
            page = console.page
            await console.sign_in(then="/console/rollouts")
            await expect(page.get_by_role("heading", name="Start a rollout")).to_be_visible()
            await expect(page.get_by_label(svc)).to_be_checked()
            await page.get_by_label("Tenant ids (separated by spaces or commas)").fill(
                " ".join(ids)
            )
            await page.get_by_label("Wave 1 name").fill("canary")
            await page.get_by_label("Wave 1 size").fill("1")
            await page.get_by_label("Wave 2 name").fill("rest")
            # A refusal of the API comes back as its problem line, with every value kept.
            await page.get_by_label("Concurrency").fill("0")
            await page.get_by_role("button", name="Start the rollout").click()
            await expect(page.get_by_role("alert")).to_contain_text(
                "The rollout was not started: invalid value for: concurrency"
            )
            await expect(page.get_by_label("Wave 1 name")).to_have_value("canary")
            await console.screenshot("rollout-form-refused")
            await page.get_by_role("button", name="Add a wave row").click()
            await expect(page.get_by_label("Wave 4 name")).to_be_visible()
            await expect(page.get_by_label("Wave 2 name")).to_have_value("rest")
            await page.get_by_label("Concurrency").fill("1")
            await page.get_by_role("button", name="Start the rollout").click()

            await page.wait_for_url(re.compile(r".*/console/rollouts/[a-f0-9]{12}$"))
            rollout_id = page.url.rsplit("/", 1)[1]
            await expect(page.get_by_role("status")).to_contain_text(
                f"Rollout {rollout_id} started: 4 tenants."
            )
            await mark_document(page)
            # Live: the canary wave finishes and the next tenant's call is held, no reload.
            await expect(page.locator("#wave-canary .status")).to_have_text("SUCCEEDED")
            await expect(page.locator("#wave-rest .status")).to_have_text("RUNNING")
            await eventually(lambda: _held(gate, ids[1]), bool)
            await expect(page.locator("#rollout-live")).to_contain_text("1 / 4 done")
            assert await not_reloaded(page)

            accept_next_dialog(page)
            await page.get_by_role("button", name="Pause").click()
            await expect(page.get_by_role("status")).to_contain_text(f"Rollout {rollout_id} paused")
            await expect(page.locator("#rollout-status")).to_have_text("PAUSED")
            await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
            await expect(page.get_by_role("button", name="Resume")).to_be_visible()
            # The call in flight finishes while paused; no other starts.
            await mark_document(page)
            gate.open()
            await expect(page.locator("#rollout-live")).to_contain_text("2 / 4 done")
            await expect(page.locator("#rollout-status")).to_have_text("PAUSED")
            assert await not_reloaded(page)
            await expect(page.locator("ol.timeline")).to_contain_text("ROLLOUT_PAUSED by operator")
            await console.screenshot("rollout-paused")
            await page.set_viewport_size({"width": 390, "height": 844})
            await console.screenshot("rollout-narrow")
            await page.set_viewport_size({"width": 1280, "height": 900})

            accept_next_dialog(page)
            await page.get_by_role("button", name="Resume").click()
            await expect(page.get_by_role("status")).to_contain_text(
                f"Rollout {rollout_id} resumed"
            )
            await mark_document(page)
            await expect(page.locator("#rollout-status")).to_have_text("SUCCEEDED")
            await expect(page.locator("#rollout-live")).to_contain_text("4 / 4 done")
            assert await not_reloaded(page)
            # Finished: the live region stops polling, and no action is left to take.
            await expect(page.locator("#rollout-live")).not_to_have_attribute(
                "data-poll", re.compile(".*")
            )
            await expect(page.locator("#rollout-live form")).to_have_count(0)
            await expect(page.locator("#rollout-tenants .s-SUCCEEDED")).to_have_count(4)
            await console.screenshot("rollout")

            await console.open("/console/rollouts")
            row = page.get_by_role("row").filter(has_text=rollout_id)
            await expect(row).to_contain_text("SUCCEEDED")
            await expect(row).to_contain_text("4 / 4")
            await console.screenshot("rollouts")
            await page.set_viewport_size({"width": 390, "height": 844})
            await console.screenshot("rollouts-narrow")
            await page.set_viewport_size({"width": 1280, "height": 900})

            await console.open(f"/console/services#{svc}")
            section = page.locator(f"section#{svc}")
            await expect(section.get_by_role("heading", name=svc)).to_be_visible()
            version_row = section.get_by_role("row").filter(has_text="v2")
            await expect(version_row).to_contain_text("4")
            await expect(section).to_contain_text("Lowest version")
            await console.screenshot("services")

    called = [c.tenant_id for c in service.calls if rollout_id in (c.idempotency_key or "")]
    assert called == ids


async def _held(gate: Gate, tenant_id: str) -> bool:
    return gate.held(tenant_id) > 0


async def test_a_read_only_token_sees_no_rollout_actions_and_a_forged_pause_is_refused(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
) -> None:
    async with gated_service(make_settings, tenants, 2) as (settings, _, gate, ids):
        gate.close(ids)
        async with open_console(settings) as console:
            writer = console.token(subject="writer")
            async with httpx.AsyncClient(
                base_url=console.base_url, headers={"Authorization": f"Bearer {writer}"}
            ) as api:
                started = await api.post(
                    "/api/rollouts", json={"selector": {"tenantIds": ids}, "concurrency": 1}
                )
                assert started.status_code == 202, started.text
                rollout_id = started.json()["id"]
                await eventually(lambda: _held(gate, ids[0]), bool)

                page = console.page
                reader = console.token(*READ_ONLY, subject="reader")
                await console.sign_in(reader, then=f"/console/rollouts/{rollout_id}")
                await expect(page.locator("#rollout-status")).to_have_text("RUNNING")
                for label in ("Pause", "Resume", "Cancel", "Retry failed"):
                    await expect(page.get_by_role("button", name=label)).to_have_count(0)
                await console.open("/console/rollouts")
                await expect(page.get_by_role("row").filter(has_text=rollout_id)).to_be_visible()
                # The list follows a rollout in flight too.
                await expect(page.locator("#rollout-list")).to_have_attribute(
                    "data-poll", "/console/rollouts?fragment=list"
                )
                await expect(page.get_by_role("heading", name="Start a rollout")).to_have_count(0)
                await expect(
                    page.locator("form[method=post][action='/console/rollouts']")
                ).to_have_count(0)

                forged = await _post_pause(console.base_url, rollout_id, writer, None)
                wrong = await _post_pause(console.base_url, rollout_id, writer, "x" * 43)
                # The reader's own CSRF token gets through the console; the API refuses the scope.
                unscoped = await _post_pause(
                    console.base_url, rollout_id, reader, csrf_token_for(reader)
                )
                after = (await api.get(f"/api/rollouts/{rollout_id}")).json()
                events = (await api.get(f"/api/rollouts/{rollout_id}/events")).json()["items"]
                gate.open()

    assert forged.status_code == 403, forged.text
    assert "CSRF" in forged.text
    assert wrong.status_code == 403, wrong.text
    assert unscoped.status_code == 403, unscoped.text
    assert "Could not pause the rollout" in unscoped.text
    assert after["status"] == "RUNNING", after
    assert [e["action"] for e in events] == ["ROLLOUT_STARTED"]


async def _post_pause(
    base_url: str, rollout_id: str, token: str, csrf: str | None
) -> httpx.Response:
    """A pause form posted with `token`'s session cookie, as another site's page would make
    the browser send it (were the cookie not SameSite=Strict)."""
    form = {"csrf_token": csrf} if csrf is not None else {}
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await http.post(
            f"/console/rollouts/{rollout_id}/pause",
            data=form,
            headers={"Cookie": f"{SESSION_COOKIE}={token}"},
        )
