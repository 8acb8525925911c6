"""Every tenant status is governed by exactly one workflow's rules, MOVING by the move's (which
restart a lost run)."""

from __future__ import annotations

import pytest

from reconciliation.rules import ALL_RULES, rules_for
from tenancy.status import TenantStatus


@pytest.mark.parametrize("status", list(TenantStatus), ids=str)
def test_each_status_has_exactly_one_workflow(status: TenantStatus) -> None:
    assert len([rules for rules in ALL_RULES if status in rules.governs]) == 1
    assert status in rules_for(status).governs


def test_a_moving_tenant_needs_its_move_run() -> None:
    rules = rules_for(TenantStatus.MOVING)

    assert rules.workflow_type == "MoveTenantWorkflow"
    assert rules.workflow_id("acme") == "tenant-move-acme"
    assert rules.needs_run == {TenantStatus.MOVING}
    # A lost run is started again: the new one carries the move on from the row.
    assert rules.restartable == {TenantStatus.MOVING}
    # The run leaves the tenant ACTIVE (switched or rolled back).
    assert rules.completes_in == {TenantStatus.ACTIVE}
    # Never asked for its live state: a MOVING tenant always needs its run.
    assert rules.settled == frozenset()
