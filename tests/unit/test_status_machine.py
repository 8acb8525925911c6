"""The tenant status machine, checked pair by pair against ARCHITECTURE.md."""

from __future__ import annotations

from itertools import product

import pytest

from tenancy.status import ALLOWED_SOURCES, TenantStatus, can_transition

S = TenantStatus

# Straight from the diagram in ARCHITECTURE.md; every other pair must be refused.
DOCUMENTED = {
    (S.PROVISIONING, S.MIGRATING),
    (S.PROVISIONING, S.PROVISION_ERROR),
    (S.MIGRATING, S.ACTIVE),
    (S.MIGRATING, S.MIGRATION_ERROR),
    (S.MIGRATION_ERROR, S.MIGRATING),
    # retry-provisioning: a new run adopts the tenant and starts over.
    (S.PROVISION_ERROR, S.PROVISIONING),
}
ALL_PAIRS = list(product(TenantStatus, TenantStatus))


def test_table_covers_every_pair() -> None:
    assert len(ALL_PAIRS) == len(TenantStatus) ** 2 == 25
    assert set(ALLOWED_SOURCES) == set(TenantStatus)


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_can_transition_matches_the_documented_machine(
    source: TenantStatus, target: TenantStatus
) -> None:
    assert can_transition(source, target) is ((source, target) in DOCUMENTED)


@pytest.mark.parametrize("status", list(TenantStatus), ids=str)
def test_no_self_transition(status: TenantStatus) -> None:
    assert not can_transition(status, status)


def test_nothing_leaves_active() -> None:
    assert [t for t in TenantStatus if can_transition(S.ACTIVE, t)] == []


def test_a_failed_provisioning_is_left_only_by_starting_over() -> None:
    assert [t for t in TenantStatus if can_transition(S.PROVISION_ERROR, t)] == [S.PROVISIONING]


def test_provisioning_is_entered_again_only_from_provision_error() -> None:
    assert [s for s in TenantStatus if can_transition(s, S.PROVISIONING)] == [S.PROVISION_ERROR]


def test_every_status_is_reachable_from_provisioning() -> None:
    reached = {S.PROVISIONING}
    frontier = [S.PROVISIONING]
    while frontier:
        source = frontier.pop()
        for target in TenantStatus:
            if can_transition(source, target) and target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(TenantStatus)


def test_only_a_failed_migration_can_be_retried() -> None:
    assert {s for s in TenantStatus if can_transition(s, S.MIGRATING)} == {
        S.PROVISIONING,
        S.MIGRATION_ERROR,
    }
