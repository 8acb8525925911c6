"""Fleet rollouts' behaviour through the API against real PostgreSQL, Temporal and HTTP services:
halting at the failure ratio and resuming, retry-failed, pause and cancel, the approval gate
between waves, tenants deleted mid-rollout, defaults and refusals, and the per-tenant records.

The database is shared with other tests, so every rollout selects its own tenants
(`selector.tenantIds`) and every test configures a service name of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import (
    DELETE_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    WRITE_SCOPE,
)
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.faults.downstream import Gate
from tests.integration.test_api import api_stack, token_for
from tests.integration.test_rollouts import provision, wait_rollout
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from workflows.rollout.contracts import PROGRESS_QUERY, RolloutProgress, rollout_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)


def fast(make_settings: Callable[..., Settings], *services: tuple[str, str]) -> Settings:
    """Settings whose failing calls fail fast."""
    return make_settings(
        *services,
        migration_max_attempts=2,
        migration_initial_interval=timedelta(milliseconds=50),
    )


def service_name() -> str:
    return f"svc-{unique_id('s')[-10:]}"


@asynccontextmanager
async def stack(
    client: Client, settings: Settings, keys_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_stack(client, settings, token_for(keys_dir, "rosa", *SCOPES)) as api:
        yield api


def rollout_calls(service: ScriptedService, rollout_id: str, pass_number: int = 1) -> list[str]:
    """The tenants the rollout's pass called, in call order."""
    prefix = f"rollout-{rollout_id}/pass-{pass_number}/"
    return [c.tenant_id for c in service.calls if (c.idempotency_key or "").startswith(prefix)]


async def start(api: httpx.AsyncClient, **request: Any) -> dict[str, Any]:
    answer = await api.post("/api/rollouts", json=request)
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def post(api: httpx.AsyncClient, rollout_id: str, action: str) -> httpx.Response:
    return await api.post(f"/api/rollouts/{rollout_id}/{action}")


async def tenant_statuses(api: httpx.AsyncClient, rollout_id: str) -> dict[str, str]:
    page = (await api.get(f"/api/rollouts/{rollout_id}/tenants", params={"limit": 500})).json()
    return {t["tenantId"]: t["status"] for t in page["items"]}


async def batches_done(client: Client, rollout_id: str, batches: int) -> RolloutProgress:
    """Wait until the rollout's run has finished `batches` batch activities (so the calls a
    batch would make have been made)."""
    handle = client.get_workflow_handle(rollout_workflow_id(rollout_id))

    async def probe() -> RolloutProgress:
        progress: RolloutProgress = await handle.query(PROGRESS_QUERY, result_type=RolloutProgress)
        return progress

    return await eventually(probe, lambda p: p.batch > batches)


async def test_halts_at_the_failure_ratio_resumes_once_fixed_and_retries_only_the_failed(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    service = ScriptedService(version="v1")
    svc = service_name()
    with serve(service.app()) as url:
        async with stack(temporal_client, fast(make_settings, (svc, url)), keys_dir) as api:
            ids = await provision(api, 20, unique_id("halt")[:20])
            before = (await api.get(f"/api/services/{svc}/versions")).json()
            service.version = "v2"
            broken = ids[:5]
            for tenant_id in broken:
                service.script(tenant_id, 400)
            # One tenant at a time: the halt is decided once 10 finished, and no further tenant
            # starts (10 still pending, 2 of them claimed by the third batch and handed back).
            rollout = await start(
                api,
                selector={"tenantIds": ids},
                waves=[{"name": "main"}],
                concurrency=1,
                maxFailureRatio=0.1,
            )
            rid = rollout["id"]
            halted = await wait_rollout(api, rid, "HALTED", "SUCCEEDED", "FAILED")
            versions_halted = (await api.get(f"/api/services/{svc}/versions")).json()
            record = (await api.get(f"/api/tenants/{broken[0]}")).json()

            for tenant_id in broken:
                service.script(tenant_id, 200)
            resumed = await post(api, rid, "resume")
            ended = await wait_rollout(api, rid, "SUCCEEDED", "FAILED")
            calls_pass_1 = rollout_calls(service, rid)

            retried = await post(api, rid, "retry-failed")
            assert retried.status_code == 202, retried.text
            assert retried.json()["status"] == "RUNNING"
            again = await wait_rollout(api, rid, "SUCCEEDED", "FAILED")
            after = (await api.get(f"/api/services/{svc}/versions")).json()

    assert before["versions"] == {"v1": 20}
    assert before["failed"] == 0

    assert halted["status"] == "HALTED", halted
    assert "main" in (halted["statusReason"] or ""), halted["statusReason"]
    assert halted["counts"]["failed"] == 5
    assert halted["counts"]["pending"] == 10
    assert halted["counts"]["running"] == 0
    assert sorted(
        (f["tenantId"], f["service"], "400" in (f["error"] or "")) for f in halted["failures"]
    ) == [(t, svc, True) for t in broken]
    # A failed fleet migration leaves the tenant ACTIVE under its old version, the record FAILED.
    assert record["status"] == "ACTIVE"
    [migration] = [m for m in record["migrations"] if m["service"] == svc]
    assert migration["status"] == "FAILED"
    assert migration["version"] == "v1"
    assert "400" in (migration["lastError"] or "")
    assert versions_halted["failed"] == 5
    assert versions_halted["versions"] == {"v1": 15, "v2": 5}
    assert versions_halted["minVersion"] == "v1"

    assert resumed.status_code == 202, resumed.text
    assert ended["status"] == "FAILED", ended
    assert ended["counts"] | {"total": 0} == {
        "total": 0,
        "pending": 0,
        "running": 0,
        "succeeded": 15,
        "failed": 5,
        "skipped": 0,
    }
    # Within a pass a failed tenant is not called again; every other tenant once.
    assert sorted(calls_pass_1) == sorted(ids)

    assert again["status"] == "SUCCEEDED", again
    assert again["counts"]["succeeded"] == 20
    assert again["failures"] == []
    pass_2 = [c for c in service.calls if f"rollout-{rid}/pass-2/" in (c.idempotency_key or "")]
    assert sorted(c.tenant_id for c in pass_2) == sorted(broken)
    assert {c.idempotency_key for c in pass_2} == {
        f"rollout-{rid}/pass-2/{t}/{svc}" for t in broken
    }
    assert after["versions"] == {"v2": 20}
    assert after["failed"] == 0
    assert after["minVersion"] == "v2"


async def test_pause_lets_calls_in_flight_finish_and_cancel_leaves_the_rest_pending(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    service = ScriptedService(version="v1")
    gate = Gate()
    svc = service_name()
    with serve(gate.wrap(service.app())) as url:
        async with stack(temporal_client, fast(make_settings, (svc, url)), keys_dir) as api:
            ids = await provision(api, 8, unique_id("pause")[:20])
            service.version = "v2"
            gate.close([ids[0]])
            rollout = await start(api, selector={"tenantIds": ids}, concurrency=1)
            rid = rollout["id"]
            await eventually(lambda: _held(gate, ids[0]), bool)
            resume_running = await post(api, rid, "resume")
            paused = await post(api, rid, "pause")
            pause_paused = await post(api, rid, "pause")
            # The call in flight finishes; the batch it belonged to must start no other.
            gate.close([ids[2]])
            await batches_done(temporal_client, rid, 1)
            while_paused = rollout_calls(service, rid)
            view_paused = (await api.get(f"/api/rollouts/{rid}")).json()

            resumed = await post(api, rid, "resume")
            # The next batch claims ids[1..4]; one at a time, ids[2] is held.
            await eventually(lambda: _held(gate, ids[2]), bool)
            cancelled = await post(api, rid, "cancel")
            gate.open()
            handle = temporal_client.get_workflow_handle(rollout_workflow_id(rid))
            await handle.result()
            final = (await api.get(f"/api/rollouts/{rid}")).json()
            statuses = await tenant_statuses(api, rid)
            cancel_again = await post(api, rid, "cancel")
            resume_cancelled = await post(api, rid, "resume")

    assert resume_running.status_code == 409, resume_running.text
    assert paused.status_code == 202, paused.text
    assert paused.json()["status"] == "PAUSED"
    assert pause_paused.status_code == 409, pause_paused.text
    assert while_paused == [ids[0]]
    assert view_paused["status"] == "PAUSED"
    assert view_paused["counts"]["succeeded"] == 1
    assert view_paused["counts"]["pending"] == 7

    assert resumed.status_code == 202, resumed.text
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert final["status"] == "CANCELLED"
    called = rollout_calls(service, rid)
    # ids[2] was in flight at the cancel and finished; the batch's ids[3] and ids[4], claimed
    # with it, were not started, nor anything after them.
    assert called == ids[:3]
    assert [statuses[t] for t in ids] == ["SUCCEEDED"] * 3 + ["PENDING"] * 5
    assert cancel_again.status_code == 409, cancel_again.text
    assert resume_cancelled.status_code == 409, resume_cancelled.text


async def _held(gate: Gate, tenant_id: str) -> bool:
    return gate.held(tenant_id) > 0


async def test_pause_after_each_wave_gates_the_canary_and_a_tenant_deleted_meanwhile_is_skipped(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    service = ScriptedService(version="v1")
    svc = service_name()
    with serve(service.app()) as url:
        async with stack(temporal_client, fast(make_settings, (svc, url)), keys_dir) as api:
            ids = await provision(api, 4, unique_id("gate")[:20])
            service.version = "v2"
            rollout = await start(
                api,
                selector={"tenantIds": ids},
                waves=[{"name": "canary", "size": 1}, {"name": "rest"}],
                pauseAfterEachWave=True,
            )
            rid = rollout["id"]
            paused = await wait_rollout(api, rid, "PAUSED", "SUCCEEDED", "FAILED")
            called_at_gate = rollout_calls(service, rid)
            deleted = await api.delete(f"/api/tenants/{ids[2]}", params={"graceSeconds": 3600})
            resumed = await post(api, rid, "resume")
            done = await wait_rollout(api, rid, "SUCCEEDED", "FAILED")
            statuses = await tenant_statuses(api, rid)

    assert paused["status"] == "PAUSED", paused
    assert [(w["name"], w["status"]) for w in paused["waves"]] == [
        ("canary", "SUCCEEDED"),
        ("rest", "PENDING"),
    ]
    assert called_at_gate == [ids[0]]
    assert deleted.status_code == 202, deleted.text
    assert resumed.status_code == 202, resumed.text
    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["succeeded"] == 3
    assert done["counts"]["skipped"] == 1
    assert statuses[ids[2]] == "SKIPPED"
    assert sorted(rollout_calls(service, rid)) == sorted(ids[:2] + ids[3:])


async def test_defaults_and_refusals(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    service = ScriptedService(version="v1")
    first, second = service_name(), service_name()
    with serve(service.app()) as url:
        settings = fast(make_settings, (first, url), (second, url))
        async with stack(temporal_client, settings, keys_dir) as api:
            prefix = unique_id("dflt")[:20]
            [active] = await provision(api, 1, prefix)
            broken = f"{prefix}_err"
            service.script(broken, 400)
            assert (
                await api.post(
                    "/api/tenants",
                    json={"id": broken, "name": "B", "storageMode": "SCHEMA", "slaTier": "BASIC"},
                )
            ).status_code == 202
            await eventually(lambda: _tenant_status(api, broken), lambda s: s == "MIGRATION_ERROR")
            service.script(broken, 200)
            service.version = "v2"

            default = await start(api, selector={"tenantIds": [active, broken]})
            default_tenants = await tenant_statuses(api, default["id"])
            default_done = await wait_rollout(api, default["id"], "SUCCEEDED", "FAILED")
            asked = await start(
                api,
                services=[second],
                selector={"tenantIds": [broken], "status": ["MIGRATION_ERROR"]},
            )
            asked_tenants = await tenant_statuses(api, asked["id"])
            asked_done = await wait_rollout(api, asked["id"], "SUCCEEDED", "FAILED")
            empty = await start(api, selector={"tenantIds": [f"{prefix}_none"]})

            base = str(api.base_url)
            unknown_service = await api.post("/api/rollouts", json={"services": ["nope"]})
            unknown_field = await api.post("/api/rollouts", json={"servises": [first]})
            unknown_selector = await api.post(
                "/api/rollouts", json={"selector": {"tenantIdz": [active]}}
            )
            unknown_wave = await api.post(
                "/api/rollouts", json={"waves": [{"name": "a", "sise": 1}]}
            )
            missing = await api.get("/api/rollouts/0123456789ab")
            missing_pause = await api.post("/api/rollouts/0123456789ab/pause")
            reader = token_for(keys_dir, "rory", ROLLOUTS_READ_SCOPE, READ_SCOPE, WRITE_SCOPE)
            writer = token_for(keys_dir, "wren", ROLLOUTS_WRITE_SCOPE)
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {reader}"}
            ) as as_reader:
                reader_post = await as_reader.post(
                    "/api/rollouts", json={"selector": {"tenantIds": [active]}}
                )
                reader_pause = await as_reader.post(f"/api/rollouts/{default['id']}/pause")
                reader_get = await as_reader.get(f"/api/rollouts/{default['id']}")
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {writer}"}
            ) as as_writer:
                writer_get = await as_writer.get(f"/api/rollouts/{default['id']}")
                writer_list = await as_writer.get("/api/rollouts")
                writer_tenants = await as_writer.get(f"/api/rollouts/{default['id']}/tenants")
            async with httpx.AsyncClient(base_url=base) as anonymous:
                anonymous_get = await anonymous.get(f"/api/rollouts/{default['id']}")
                anonymous_post = await anonymous.post("/api/rollouts", json={})

    assert default["services"] == [first, second]
    assert default["counts"]["total"] == 1
    assert set(default_tenants) == {active}
    assert default_done["status"] == "SUCCEEDED"
    assert asked["services"] == [second]
    assert asked["counts"]["total"] == 1
    assert set(asked_tenants) == {broken}
    assert asked_done["status"] == "SUCCEEDED", asked_done
    assert [c.tenant_id for c in service.calls if asked["id"] in (c.idempotency_key or "")] == [
        broken
    ]
    assert empty["status"] == "SUCCEEDED"
    assert empty["counts"]["total"] == 0

    for refused in (unknown_service, unknown_field, unknown_selector, unknown_wave):
        assert refused.status_code == 422, refused.text
    assert "nope" in unknown_service.text
    assert missing.status_code == 404, missing.text
    assert missing_pause.status_code == 404, missing_pause.text
    assert reader_post.status_code == 403, reader_post.text
    assert reader_pause.status_code == 403, reader_pause.text
    assert reader_get.status_code == 200, reader_get.text
    assert writer_get.status_code == 403, writer_get.text
    assert writer_list.status_code == 403, writer_list.text
    assert writer_tenants.status_code == 403, writer_tenants.text
    assert anonymous_get.status_code == 401, anonymous_get.text
    assert anonymous_post.status_code == 401, anonymous_post.text


async def _tenant_status(api: httpx.AsyncClient, tenant_id: str) -> str | None:
    answer = await api.get(f"/api/tenants/{tenant_id}")
    if answer.status_code != 200:
        return None
    status: str = answer.json()["status"]
    return status


async def test_a_tenant_deleted_after_its_batch_was_claimed_is_still_skipped(
    temporal_client: Client, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    service = ScriptedService(version="v1")
    gate = Gate()
    svc = service_name()
    with serve(gate.wrap(service.app())) as url:
        async with stack(temporal_client, fast(make_settings, (svc, url)), keys_dir) as api:
            ids = await provision(api, 3, unique_id("race")[:20])
            service.version = "v2"
            gate.close([ids[0]])
            # One batch claims all three; one at a time, ids[0] is held while ids[2] is deleted.
            rollout = await start(api, selector={"tenantIds": ids}, concurrency=1)
            rid = rollout["id"]
            await eventually(lambda: _held(gate, ids[0]), bool)
            deleted = await api.delete(f"/api/tenants/{ids[2]}", params={"graceSeconds": 3600})
            gate.open()
            done = await wait_rollout(api, rid, "SUCCEEDED", "FAILED")

    assert deleted.status_code == 202, deleted.text
    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["skipped"] == 1
    assert rollout_calls(service, rid) == ids[:2]
