"""POST /api/tenants answers from its own start and its own insert, whatever the worker's
backlog: the row exists before the 202, racing duplicates give one tenant, a row owned by
another run is never taken, and a database lost after the start leaves the row to the run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from infra.db.repository import TenantRepository
from tenancy.failures import FailureType
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from tests.support.tcp_proxy import ThreadedTcpProxy, through
from workflows.provision import starts
from workflows.provision.contracts import ProvisionInput

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

OPERATOR = "creator"
# Long enough for a start on a loaded machine, short enough that a POST waiting on a worker
# that never comes fails the test quickly.
CREATE_TIMEOUT = timedelta(seconds=5)


def body(tenant_id: str) -> dict[str, str]:
    return {"id": tenant_id, "name": "Fast", "storageMode": "SCHEMA", "slaTier": "BASIC"}


async def test_a_post_is_answered_while_no_worker_polls_and_the_run_completes_later(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    tenants: TenantRepository,
) -> None:
    service = ScriptedService()
    with serve(service.app()) as service_url:
        settings = make_settings(("backend-service", service_url), create_timeout=CREATE_TIMEOUT)
        tenant_id = unique_id("noworker")
        async with api_client(settings, keys_dir, subject=OPERATOR) as api:
            created = await api.post("/api/tenants", json=body(tenant_id))
            read = await api.get(f"/api/tenants/{tenant_id}")
            latest = await temporal_client.get_workflow_handle(
                provision_workflow_id(tenant_id)
            ).describe()

            assert created.status_code == 202, created.text
            assert created.headers["location"] == f"/api/tenants/{tenant_id}"
            assert read.status_code == 200
            for answer in (created.json(), read.json()):
                assert answer["status"] == "PROVISIONING"
                assert answer["createdBy"] == OPERATOR
                assert answer["workflowRunId"] == latest.run_id

            async with running_worker(temporal_client, settings):
                done = await eventually(
                    lambda: tenants.get(tenant_id),
                    lambda t: t is not None and t.status is TenantStatus.ACTIVE,
                )
            events = await tenants.events(tenant_id)

    assert done is not None
    assert done.last_migration_version == {"backend-service": "0002"}
    assert done.workflow_run_id == latest.run_id
    # The workflow's own record step found the API's row: one CREATED event, by the caller.
    created_events = [e for e in events if e.action is EventAction.CREATED]
    assert [e.actor for e in created_events] == [OPERATOR]


async def test_racing_posts_without_a_worker_give_one_202_and_one_row(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    platform_db_url: str,
) -> None:
    settings = make_settings(create_timeout=CREATE_TIMEOUT)
    tenant_id = unique_id("race")
    async with api_client(settings, keys_dir, subject=OPERATOR) as api:
        answers = await asyncio.gather(
            *(api.post("/api/tenants", json=body(tenant_id)) for _ in range(10))
        )
    handle = temporal_client.get_workflow_handle(provision_workflow_id(tenant_id))
    runs = await eventually(
        lambda: temporal_client.count_workflows(
            f"WorkflowId = '{provision_workflow_id(tenant_id)}'"
        ),
        lambda c: c.count >= 1,
    )
    with psycopg.connect(platform_db_url) as conn:
        rows = conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    await handle.terminate("test done")

    assert sorted(a.status_code for a in answers) == [202] + [409] * 9, [a.text for a in answers]
    assert rows == (1,)
    assert runs.count == 1


async def test_a_post_for_a_row_owned_by_a_failed_run_is_409_and_leaves_the_row(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    tenants: TenantRepository,
) -> None:
    settings = make_settings(create_timeout=CREATE_TIMEOUT)
    spec = TenantSpec(
        id=unique_id("owned"),
        name="Earlier",
        storage_mode=StorageMode.SCHEMA,
        sla_tier=SlaTier.BASIC,
    )
    workflow_id = provision_workflow_id(spec.id)
    # An earlier run recorded the row, then ended without completing: a new start is allowed,
    # the row is not the new run's.
    earlier = await starts.start(
        temporal_client, ProvisionInput(spec=spec, requested_by="earlier"), settings.task_queue
    )
    assert earlier.result_run_id is not None
    await tenants.insert(spec, workflow_id, earlier.result_run_id, ["backend-service"], "earlier")
    await earlier.terminate("the earlier run failed")
    before = await tenants.get(spec.id)

    async with api_client(settings, keys_dir, subject=OPERATOR) as api:
        refused = await api.post("/api/tenants", json=body(spec.id))
    after_post = await tenants.get(spec.id)
    latest = await temporal_client.get_workflow_handle(workflow_id).describe()
    async with running_worker(temporal_client, settings):
        with pytest.raises(WorkflowFailureError) as failed:
            await temporal_client.get_workflow_handle(workflow_id, run_id=latest.run_id).result()
    after_run = await tenants.get(spec.id)

    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == f"tenant {spec.id} already exists"
    assert after_post == before
    assert after_run == before
    assert latest.run_id != earlier.result_run_id
    # The POST's run refuses the row at its own record step.
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == FailureType.TENANT_EXISTS


async def test_a_database_lost_after_the_start_answers_503_and_the_run_records_the_tenant(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    tenants: TenantRepository,
) -> None:
    service = ScriptedService()
    with serve(service.app()) as service_url:
        settings = make_settings(("backend-service", service_url), create_timeout=CREATE_TIMEOUT)
        target = urlsplit(settings.require_database_url())
        # Its own thread: the API's start-up (migrations, pool) goes through it.
        proxy = ThreadedTcpProxy(free_port(), target.hostname or "127.0.0.1", target.port or 5432)
        api_settings = make_settings(
            ("backend-service", service_url),
            create_timeout=CREATE_TIMEOUT,
            database_url=through(settings.require_database_url(), proxy.port),
        )
        tenant_id = unique_id("nodb")
        proxy.start()
        try:
            async with (
                running_worker(temporal_client, settings),
                api_client(api_settings, keys_dir, subject=OPERATOR) as api,
            ):
                proxy.stop()
                refused = await api.post("/api/tenants", json=body(tenant_id))
                done = await eventually(
                    lambda: tenants.get(tenant_id),
                    lambda t: t is not None and t.status is TenantStatus.ACTIVE,
                )
        finally:
            proxy.close()

    detail: Any = refused.json()["detail"]
    assert refused.status_code == 503, refused.text
    assert "accepted by Temporal" in detail
    assert "GET the tenant later" in detail
    assert done is not None
    assert done.created_by == OPERATOR
    assert done.last_migration_version == {"backend-service": "0002"}
    latest = await temporal_client.get_workflow_handle(provision_workflow_id(tenant_id)).describe()
    assert latest.status is WorkflowExecutionStatus.COMPLETED
    assert done.workflow_run_id == latest.run_id
