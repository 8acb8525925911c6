"""500 tenants in one rollout through the real reference services (each applies every one of
its migrations to each tenant's empty schema), on a Temporal server that suggests
continue-as-new after a few dozen events: the rollout continues as new, each run's history stays
small, every tenant succeeds, and the Web UI's `RolloutStatus` finds it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import api_stack, token_for
from tests.integration.test_rollouts import SCOPES, wait_rollout
from tests.support.fleet import seed_fleet
from tests.support.polling import eventually
from workflows.rollout.contracts import rollout_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANTS = 500
# Each run ends near the server's suggestion (60 events) plus one batch's few events.
MAX_RUN_EVENTS = 200


@pytest.mark.timeout(240)
async def test_500_tenants_continue_as_new_with_small_histories(
    short_history_client: Client,
    make_settings: Callable[..., Settings],
    reference_services: list[tuple[str, str]],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(
        *reference_services,
        temporal_address=short_history_client.service_client.config.target_host,
    )
    prefix = unique_id("scale")[:20]
    async with api_stack(
        short_history_client, settings, token_for(keys_dir, "sam", *SCOPES)
    ) as api:
        began = time.monotonic()
        ids = await seed_fleet(settings, tenants, prefix, TENANTS)
        provisioned = time.monotonic() - began
        # Concurrency 4: 16 tenants a batch, ~32 batches, a few events each.
        answer = await api.post(
            "/api/rollouts", json={"selector": {"tenantIds": ids}, "concurrency": 4}
        )
        assert answer.status_code == 202, answer.text
        rollout_id = answer.json()["id"]
        began = time.monotonic()
        done = await wait_rollout(api, rollout_id, "SUCCEEDED", "FAILED")
        rolled = time.monotonic() - began

        async def listed() -> list[str]:
            return [
                execution.id
                async for execution in short_history_client.list_workflows(
                    f"RolloutStatus='SUCCEEDED' AND WorkflowId='{rollout_workflow_id(rollout_id)}'"
                )
            ]

        found = await eventually(listed, bool, timeout=30)

    runs: list[Any] = [
        execution
        async for execution in short_history_client.list_workflows(
            f"WorkflowId='{rollout_workflow_id(rollout_id)}'"
        )
    ]
    sizes = []
    for execution in runs:
        handle = short_history_client.get_workflow_handle(execution.id, run_id=execution.run_id)
        sizes.append(len((await handle.fetch_history()).events))
    logging.getLogger(__name__).warning(
        "seeded %d in %.1fs; rollout in %.1fs; events per run %s",
        TENANTS,
        provisioned,
        rolled,
        sizes,
    )

    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["succeeded"] == TENANTS, done["counts"]
    assert done["counts"]["total"] == TENANTS
    assert found == [rollout_workflow_id(rollout_id)]
    assert len(runs) > 1, sizes
    assert max(sizes) < MAX_RUN_EVENTS, sizes
