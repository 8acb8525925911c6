"""Listing rollouts: one statement per page whatever its size, counts kept by the database in
the same transaction as each tenant's status change, and list items that summarise the request
(its tenant-id lists as counts) while `GET /api/rollouts/{id}` keeps it whole."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.client import Client

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE
from api.console.session import SESSION_COOKIE
from api.main import create_app
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from tenancy.rollouts import (
    RolloutRequest,
    RolloutStatus,
    RolloutTenantStatus,
    Selector,
    WaveSpec,
)
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import token_for
from tests.support.rollouts import cancel_rollouts, insert_active_tenants
from tests.support.servers import serve
from tests.support.statements import counting_pool

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _request(ids: list[str]) -> RolloutRequest:
    return RolloutRequest(
        services=["svc"],
        selector=Selector(tenant_ids=ids),
        waves=[WaveSpec(name="canary", size=1), WaveSpec(name="rest")],
        concurrency=2,
        max_failure_ratio=0.5,
    )


def _grouped(url: str, rollout_id: str) -> dict[tuple[int, str], int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT wave, status, count(*) FROM rollout_tenants WHERE rollout_id = %s "
            "GROUP BY wave, status",
            (rollout_id,),
        ).fetchall()
    return {(wave, status): n for wave, status, n in rows}


def _shown(rollout: Any) -> dict[tuple[int, str], int]:
    shown = {}
    for position, wave in enumerate(rollout.waves):
        for status in RolloutTenantStatus:
            n = getattr(wave.counts, status.value.lower())
            if n:
                shown[(position, status.value)] = n
    return shown


async def test_a_page_of_rollouts_is_one_statement_whatever_its_size(
    platform_db_url: str, tenants: TenantRepository
) -> None:
    ids = await insert_active_tenants(tenants, unique_id("list")[:20], 3)
    async with counting_pool(platform_db_url) as (pool, counter):
        rollouts = RolloutRepository(pool)
        created = [uuid.uuid4().hex[:12] for _ in range(6)]
        for rollout_id in created:
            request = _request(ids)
            assert request.waves is not None
            await rollouts.create(rollout_id, request, ["svc"], request.waves, "lister")
        statements = {}
        pages = {}
        for limit in (2, 6):
            counter.reset()
            pages[limit] = await rollouts.newest(limit=limit)
            statements[limit] = counter.count
        whole = {rollout_id: await rollouts.get(rollout_id) for rollout_id in created}
        await cancel_rollouts(rollouts, *created)

    assert statements == {2: 1, 6: 1}
    assert [item.id for item in pages[6]] == list(reversed(created))
    for item in pages[6]:
        assert item.counts == whole[item.id].counts
        assert [(w.name, w.status, w.counts) for w in item.waves] == [
            (w.name, w.status, w.counts) for w in whole[item.id].waves
        ]
        assert item.counts.total == 3
        assert [w.counts.total for w in item.waves] == [1, 2]


async def test_counts_follow_every_status_change_of_a_rollouts_tenants(
    platform_db_url: str, tenants: TenantRepository
) -> None:
    ids = await insert_active_tenants(tenants, unique_id("cnt")[:20], 5)
    async with counting_pool(platform_db_url) as (pool, _):
        rollouts = RolloutRepository(pool)
        rollout_id = uuid.uuid4().hex[:12]
        request = _request(ids)
        assert request.waves is not None
        await rollouts.create(rollout_id, request, ["svc"], request.waves, "counter")
        seen = [_shown(await rollouts.get(rollout_id))]
        await rollouts.claim(rollout_id, 0, 1, 10)
        await rollouts.finish_tenant(rollout_id, ids[0], RolloutTenantStatus.FAILED, "svc", "x")
        claimed = await rollouts.claim(rollout_id, 1, 2, 3)
        await rollouts.release(rollout_id, 1, [claimed[0].tenant_id])
        await rollouts.finish_tenant(rollout_id, claimed[1].tenant_id, RolloutTenantStatus.SKIPPED)
        await rollouts.finish_tenant(
            rollout_id, claimed[2].tenant_id, RolloutTenantStatus.SUCCEEDED
        )
        seen.append(_shown(await rollouts.get(rollout_id)))
        wave_one = await rollouts.wave_counts(rollout_id, 1)
        await rollouts.change_status(rollout_id, RolloutStatus.FAILED, "counter", None)
        await rollouts.new_pass(rollout_id, "counter")
        seen.append(_shown(await rollouts.get(rollout_id)))
        listed = [r for r in await rollouts.newest(limit=100) if r.id == rollout_id]
        grouped = _grouped(platform_db_url, rollout_id)
        await cancel_rollouts(rollouts, rollout_id)

    assert seen[0] == {(0, "PENDING"): 1, (1, "PENDING"): 4}
    assert seen[1] == {
        (0, "FAILED"): 1,
        (1, "PENDING"): 2,
        (1, "SKIPPED"): 1,
        (1, "SUCCEEDED"): 1,
    }
    assert (wave_one.pending, wave_one.skipped, wave_one.succeeded) == (2, 1, 1)
    assert (
        seen[2]
        == grouped
        == {
            (0, "PENDING"): 1,
            (1, "PENDING"): 2,
            (1, "SKIPPED"): 1,
            (1, "SUCCEEDED"): 1,
        }
    )
    assert _shown(listed[0]) == grouped


async def test_the_list_summarises_each_request_and_the_rollout_keeps_it_whole(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"), api_max_body_bytes=1_000_000)
    # Ids no tenant has: the request is stored whole, the rollout selects nobody.
    wanted = [f"{unique_id('nobody')[:20]}_{i:05d}" for i in range(10_000)]
    token = token_for(keys_dir, "lea", ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE)
    with serve(create_app(settings)) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            started = []
            for _ in range(3):
                answer = await api.post(
                    "/api/rollouts",
                    json={
                        "selector": {"tenantIds": wanted},
                        "waves": [{"name": "first", "tenantIds": wanted[:20]}, {"name": "rest"}],
                    },
                )
                assert answer.status_code == 202, answer.text
                started.append(answer.json()["id"])
            listed = await api.get("/api/rollouts", params={"limit": 3})
            whole = (await api.get(f"/api/rollouts/{started[0]}")).json()
            too_many = await api.get("/api/rollouts", params={"limit": 101})

    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["id"] for item in items] == list(reversed(started))
    # A summary per rollout, not 10,000 ids (about 200 KB) each.
    assert len(listed.content) < 3 * 2_000, len(listed.content)
    request = items[-1]["request"]
    assert request["selector"] == {"status": ["ACTIVE"], "slaTier": None, "tenantIdCount": 10_000}
    assert [(w["name"], w["tenantIdCount"]) for w in request["waves"]] == [
        ("first", 20),
        ("rest", None),
    ]
    assert "tenantIds" not in json.dumps(items)
    assert whole["request"]["selector"]["tenantIds"] == wanted
    assert whole["request"]["waves"][0]["tenantIds"] == wanted[:20]
    assert too_many.status_code == 422


async def test_the_console_overview_shows_the_five_newest_rollouts(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"))
    token = token_for(keys_dir, "olga", READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE)
    with serve(create_app(settings)) as base:
        async with (
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api,
            httpx.AsyncClient(
                base_url=base, headers={"Cookie": f"{SESSION_COOKIE}={token}"}
            ) as console,
        ):
            started = []
            for _ in range(6):
                # A rollout that selects nobody ends at once, SUCCEEDED, without a run.
                answer = await api.post(
                    "/api/rollouts", json={"selector": {"tenantIds": [unique_id("none")[:20]]}}
                )
                assert answer.status_code == 202, answer.text
                started.append(answer.json()["id"])
            page = await console.get("/console")

    assert page.status_code == 200, page.text
    shown = [rid for rid in started if f"/console/rollouts/{rid}" in page.text]
    assert shown == started[1:]
