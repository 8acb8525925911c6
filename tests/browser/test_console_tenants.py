"""The tenant pages in a real browser on the real stack: provisioning followed live, a failed
migration retried, deletion and restore, what a read-only token sees, forged forms, filters."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Dialog, Page, expect

from api.console.session import SESSION_COOKIE, csrf_token_for
from tenancy.settings import Settings
from tests.browser.conftest import READ_ONLY, Console
from tests.conftest import unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TEMPORAL_UI = "http://temporal-ui.example:8233"


def accept_confirmations(page: Page) -> set[asyncio.Future[None]]:
    """Answer every window.confirm of the page with OK (the operator confirms); the answers
    in flight are kept, so none is collected before it is sent."""
    pending: set[asyncio.Future[None]] = set()

    def accept(dialog: Dialog) -> None:
        answer = asyncio.ensure_future(dialog.accept())
        pending.add(answer)
        answer.add_done_callback(pending.discard)

    page.on("dialog", accept)
    return pending


async def provision(console: Console, tenant_id: str, **fields: str) -> dict[str, Any]:
    """Provision through the API (the pages under test are elsewhere); the tenant as answered."""
    spec = {"id": tenant_id, "name": f"Tenant {tenant_id}", "storageMode": "SCHEMA"}
    spec |= {"slaTier": "STANDARD"} | fields
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as http:
        answer = await http.post(
            "/api/tenants", json=spec, headers={"Authorization": f"Bearer {console.token()}"}
        )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def api_get(console: Console, path: str) -> Any:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as http:
        answer = await http.get(path, headers={"Authorization": f"Bearer {console.token()}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def reaches(console: Console, tenant_id: str, status: str) -> dict[str, Any]:
    """The tenant once the API reports `status`."""
    tenant: dict[str, Any] = await eventually(
        lambda: api_get(console, f"/api/tenants/{tenant_id}"),
        lambda body: body["status"] == status,
    )
    return tenant


async def test_provision_from_the_form_and_see_active_without_reloading(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    reference_services: list[tuple[str, str]],
) -> None:
    tenant_id = unique_id("pv")
    async with open_console(make_settings(*reference_services)) as console:
        page = console.page
        fragments: list[str] = []
        page.on("request", lambda r: fragments.append(r.url) if "fragment=live" in r.url else None)
        await console.sign_in(then="/console/tenants")
        form = page.locator("#provision")
        await form.get_by_label("Tenant id").fill(tenant_id)
        await form.get_by_label("Name").fill("Console Corp")
        await form.get_by_label("Storage mode").select_option("DATABASE")
        await form.get_by_label("SLA tier").select_option("PREMIUM")
        await form.get_by_role("button", name="Provision").click()
        await page.wait_for_url(console.url(f"/console/tenants/{tenant_id}"))
        await expect(page.get_by_role("status")).to_have_text(
            f"Provisioning of {tenant_id} started."
        )
        # A mark on this very document: a reload would lose it.
        await page.evaluate("window.sameDocument = true")

        await expect(page.locator("#tenant-status")).to_have_text("ACTIVE", timeout=60_000)
        assert await page.evaluate("window.sameDocument === true")
        assert fragments, "the page never asked for its live fragment"
        # Once ACTIVE nothing is in flight: the fragment stops asking.
        await expect(page.locator("#tenant-live")).not_to_have_attribute(
            "data-poll", re.compile("")
        )

        ledger = page.locator("#ledger tbody tr")
        await expect(ledger).to_have_count(2)
        for service, _ in reference_services:
            row = ledger.filter(has_text=service)
            await expect(row).to_contain_text("SUCCEEDED")
            await expect(row.locator("code")).to_have_text(re.compile(r"\S+"))
        # The audit trail, newest first: the last status change on top, the creation last.
        timeline = page.locator("ol.timeline > li")
        await expect(timeline.first).to_contain_text("MIGRATING → ACTIVE")
        await expect(timeline.last).to_contain_text("CREATED")
        await expect(page.locator("#tenant-live")).to_contain_text("PREMIUM")
        await expect(page.get_by_text("jdbc:postgresql://")).to_be_visible()
        await console.screenshot("tenant-active")

        # Basic a11y: every visible input of the page has a label or an aria-label.
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(i => !(i.labels && i.labels.length) && !i.getAttribute('aria-label'))
                .map(i => i.outerHTML)"""
        )
        assert unlabelled == []
        assert await page.locator("#tenant-live input:not([type=hidden])").count() >= 3

        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator("#tenant-status")).to_be_visible()
        # Nothing wider than the phone's screen: no sideways scrolling of the page.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await console.screenshot("tenant-narrow")


async def test_a_migration_error_tenant_is_retried_from_its_page(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    service: tuple[ScriptedService, str],
) -> None:
    scripted, url = service
    tenant_id = unique_id("me")
    scripted.script(tenant_id, 400)
    async with open_console(make_settings(("backend-service", url))) as console:
        await provision(console, tenant_id)
        await reaches(console, tenant_id, "MIGRATION_ERROR")
        page = console.page
        await console.sign_in(then=f"/console/tenants/{tenant_id}")
        await expect(page.locator("#tenant-status")).to_have_text("MIGRATION_ERROR")
        await expect(page.locator("#ledger")).to_contain_text("scripted failure 400")
        await expect(page.get_by_role("button", name="Retry provisioning")).to_have_count(0)
        await console.screenshot("tenant-migration-error")

        scripted.script(tenant_id, 200)  # the service is fixed
        accept_confirmations(page)
        await page.get_by_role("button", name="Retry migration").click()
        await expect(page.get_by_role("status")).to_have_text("Migration retry requested.")
        await expect(page.locator("#tenant-status")).to_have_text("ACTIVE", timeout=30_000)
        await expect(page.locator("#ledger")).to_contain_text("SUCCEEDED")
        await expect(page.locator("ol.timeline")).to_contain_text("RETRY_REQUESTED")
        await expect(page.get_by_role("button", name="Retry migration")).to_have_count(0)
    assert len(scripted.calls_for(tenant_id)) >= 2


async def test_delete_restore_and_delete_at_once_from_the_page(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    service: tuple[ScriptedService, str],
) -> None:
    _, url = service
    tenant_id = unique_id("dl")
    settings = make_settings(("backend-service", url), temporal_ui_url=TEMPORAL_UI)
    async with open_console(settings) as console:
        await provision(console, tenant_id)
        await reaches(console, tenant_id, "ACTIVE")
        page = console.page
        accept_confirmations(page)
        await console.sign_in(then=f"/console/tenants/{tenant_id}")
        namespace = "default"
        provisioning = page.get_by_role("link", name="Provisioning run in the Temporal Web UI")
        await expect(provisioning).to_have_attribute(
            "href", f"{TEMPORAL_UI}/namespaces/{namespace}/workflows/tenant-provision-{tenant_id}"
        )
        await expect(page.get_by_role("link", name="Deletion run", exact=False)).to_have_count(0)

        # A wrong id typed to confirm: refused on the server, nothing changes, the form keeps
        # what was typed.
        await page.get_by_label("Grace period in seconds").fill("3600")
        await page.get_by_label("Reason", exact=True).fill("customer left")
        await page.get_by_label("to confirm").fill("not_this_one")
        await page.get_by_role("button", name="Delete tenant").click()
        await expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
        await expect(page.locator("#tenant-status")).to_have_text("ACTIVE")
        assert (await api_get(console, f"/api/tenants/{tenant_id}"))["deletion"] is None
        await expect(page.get_by_label("Grace period in seconds")).to_have_value("3600")

        await page.get_by_label("to confirm").fill(tenant_id)
        await page.get_by_role("button", name="Delete tenant").click()
        await expect(page.get_by_role("status")).to_have_text(f"Deletion of {tenant_id} scheduled.")
        await expect(page.locator("#tenant-status")).to_have_text("DELETION_SCHEDULED")
        await expect(page.locator("#tenant-deletion")).to_contain_text("customer left")
        await expect(
            page.get_by_role("link", name="Deletion run in the Temporal Web UI")
        ).to_have_attribute(
            "href", f"{TEMPORAL_UI}/namespaces/{namespace}/workflows/tenant-delete-{tenant_id}"
        )
        # A scheduled deletion is looked at slowly while its purge is far away.
        await expect(page.locator("#tenant-live")).to_have_attribute("data-poll-interval", "5000")
        await expect(page.get_by_role("button", name="Delete tenant")).to_have_count(0)

        # What the operator types survives the fragment's refresh.
        await page.get_by_label("Reason (optional)").fill("customer came back")
        await page.evaluate("document.getElementById('tenant-live').dataset.stale = 'yes'")
        await expect(page.locator("#tenant-live:not([data-stale])")).to_have_count(
            1, timeout=15_000
        )
        await expect(page.get_by_label("Reason (optional)")).to_have_value("customer came back")
        await page.get_by_role("button", name="Restore").click()
        await expect(page.get_by_role("status")).to_have_text(f"Deletion of {tenant_id} cancelled.")
        await expect(page.locator("#tenant-status")).to_have_text("ACTIVE")
        await expect(page.locator("ol.timeline > li").first).to_contain_text(
            "DELETION_SCHEDULED → ACTIVE"
        )
        await expect(page.locator("ol.timeline")).to_contain_text("customer came back")

        await page.get_by_label("Grace period in seconds").fill("0")
        await page.get_by_label("to confirm").fill(tenant_id)
        await page.get_by_role("button", name="Delete tenant").click()
        await expect(page.locator("#tenant-status")).to_have_text("DELETED", timeout=30_000)
        await expect(page.locator("#tenant-live")).not_to_have_attribute(
            "data-poll", re.compile("")
        )
        await expect(page.locator("#tenant-live button")).to_have_count(0)


async def test_a_read_only_token_sees_no_actions_and_forged_forms_are_refused(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    service: tuple[ScriptedService, str],
) -> None:
    scripted, url = service
    tenant_id = unique_id("ro")
    scripted.script(tenant_id, 400)
    async with open_console(make_settings(("backend-service", url))) as console:
        await provision(console, tenant_id)
        await reaches(console, tenant_id, "MIGRATION_ERROR")
        page = console.page
        reader = console.token(*READ_ONLY, subject="reader")
        await console.sign_in(reader, then=f"/console/tenants/{tenant_id}")
        await expect(page.locator("#tenant-status")).to_have_text("MIGRATION_ERROR")
        await expect(page.locator("#tenant-live")).to_contain_text("scripted failure 400")
        await expect(page.locator("main button")).to_have_count(0)
        await console.open("/console/tenants")
        await expect(page.get_by_role("heading", name="Tenants", exact=True)).to_be_visible()
        await expect(page.locator("#provision")).to_have_count(0)
        await expect(page.locator("main button")).to_have_text(["Filter"])

        before = await api_get(console, f"/api/tenants/{tenant_id}/events")
        operator = console.token()  # a session that could do it all, but not without its token
        actions = {
            f"/console/tenants/{tenant_id}/retry-migration": {},
            f"/console/tenants/{tenant_id}/delete": {"confirm": tenant_id, "graceSeconds": "0"},
        }
        async with httpx.AsyncClient(
            base_url=console.base_url, cookies={SESSION_COOKIE: operator}
        ) as forger:
            for path, form in actions.items():
                missing = await forger.post(path, data=form)
                wrong = await forger.post(path, data=form | {"csrf_token": csrf_token_for(reader)})
                assert (missing.status_code, wrong.status_code) == (403, 403), path
                assert "Nothing was changed" in missing.text
        # A read-only session with its own good CSRF token is refused by the API itself.
        async with httpx.AsyncClient(
            base_url=console.base_url, cookies={SESSION_COOKIE: reader}
        ) as http:
            answer = await http.post(
                f"/console/tenants/{tenant_id}/retry-migration",
                data={"csrf_token": csrf_token_for(reader)},
            )
            provisioned = await http.post(
                "/console/tenants",
                data={
                    "csrf_token": csrf_token_for(reader),
                    "id": unique_id("ro"),
                    "name": "Not allowed",
                    "storageMode": "SCHEMA",
                    "slaTier": "BASIC",
                },
            )
        assert answer.status_code == 403
        assert "tenants:write" in answer.text
        assert provisioned.status_code == 403
        assert 'role="alert">' in provisioned.text
        assert "tenants:write" in provisioned.text

        tenant = await api_get(console, f"/api/tenants/{tenant_id}")
        assert tenant["status"] == "MIGRATION_ERROR"
        assert tenant["deletion"] is None
        assert await api_get(console, f"/api/tenants/{tenant_id}/events") == before
    assert len(scripted.calls_for(tenant_id)) == 1


async def test_filters_and_id_prefix_search_narrow_the_list(
    open_console: Callable[..., Any],
    make_settings: Callable[..., Settings],
    service: tuple[ScriptedService, str],
) -> None:
    _, url = service
    prefix = unique_id("fl")
    specs = {
        f"{prefix}_a": {"slaTier": "BASIC", "storageMode": "SCHEMA"},
        f"{prefix}_b": {"slaTier": "PREMIUM", "storageMode": "DATABASE"},
        f"{prefix}_c": {"slaTier": "PREMIUM", "storageMode": "SCHEMA"},
    }
    async with open_console(make_settings(("backend-service", url))) as console:
        for tenant_id, fields in specs.items():
            await provision(console, tenant_id, **fields)
        for tenant_id in specs:
            await reaches(console, tenant_id, "ACTIVE")
        page = console.page
        await console.sign_in(then="/console/tenants")
        rows = page.locator("#tenant-rows tbody tr")

        await page.get_by_label("Id starts with").fill(prefix.upper())
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(3)
        await expect(rows.locator("td:first-child")).to_have_text(list(specs))
        await console.screenshot("tenants")

        await page.get_by_label("SLA tier").first.select_option("PREMIUM")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(2)
        await page.get_by_label("Storage mode").first.select_option("SCHEMA")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows.locator("td:first-child")).to_have_text([f"{prefix}_c"])
        # The filters are in the URL: a link to this list shows the same.
        assert f"idPrefix={prefix}&" in page.url
        assert "slaTier=PREMIUM" in page.url
        assert "storageMode=SCHEMA" in page.url

        # Paging keeps the filters: two per page, the third on the next.
        await console.open(f"/console/tenants?idPrefix={prefix}&limit=2")
        await expect(rows).to_have_count(2)
        await page.get_by_role("link", name="Next page").click()
        await expect(rows.locator("td:first-child")).to_have_text([f"{prefix}_c"])
        assert f"idPrefix={prefix}" in page.url
        await expect(page.get_by_role("link", name="Next page")).to_have_count(0)

        # The counts at the top filter the list by status.
        await page.locator("ul.counts a", has_text="ACTIVE").click()
        await expect(page).to_have_url(re.compile(r"status=ACTIVE"))
        await expect(page.get_by_label("Status", exact=True)).to_have_value("ACTIVE")
