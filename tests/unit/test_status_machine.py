"""The tenant status machine, checked pair by pair against ARCHITECTURE.md."""

from __future__ import annotations

from itertools import product

import pytest

from tenancy.status import (
    ALLOWED_SOURCES,
    DELETABLE,
    DELETION_STATUSES,
    RESTORABLE,
    Decision,
    TenantStatus,
    can_transition,
    decide,
)
from tests.unit.documented_machine import DELETION, DOCUMENTED, FORWARD, LIFE, MOVE, RESTORE

S = TenantStatus

RESTORED = frozenset(target for _, target in RESTORE)
ALL_PAIRS = list(product(TenantStatus, TenantStatus))


def test_table_covers_every_pair() -> None:
    assert len(ALL_PAIRS) == len(TenantStatus) ** 2 == 100
    assert set(ALLOWED_SOURCES) == set(TenantStatus)


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_can_transition_matches_the_documented_machine(
    source: TenantStatus, target: TenantStatus
) -> None:
    assert can_transition(source, target) is ((source, target) in DOCUMENTED)


@pytest.mark.parametrize(
    ("restoring", "moving"),
    [(False, False), (True, False), (False, True)],
    ids=["transition", "restore", "move"],
)
@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_decide_takes_restore_and_move_edges_only_when_asked(
    source: TenantStatus, target: TenantStatus, restoring: bool, moving: bool
) -> None:
    edges = RESTORE if restoring else MOVE if moving else FORWARD
    expected = (
        Decision.NO_OP
        if source is target
        else Decision.APPLY
        if (source, target) in edges
        else Decision.REFUSE
    )
    assert decide(source, target, restoring=restoring, moving=moving) is expected


def test_the_named_sets_are_the_documented_ones() -> None:
    assert DELETABLE == LIFE
    assert DELETION_STATUSES == DELETION
    assert RESTORABLE == RESTORED


@pytest.mark.parametrize("status", list(TenantStatus), ids=str)
def test_no_self_transition(status: TenantStatus) -> None:
    assert not can_transition(status, status)


def test_nothing_leaves_deleted() -> None:
    assert [t for t in TenantStatus if can_transition(S.DELETED, t)] == []
    for target, restoring in product(TenantStatus, [False, True]):
        assert decide(S.DELETED, target, restoring=restoring) is not Decision.APPLY


def test_deleted_is_the_only_status_without_a_way_out() -> None:
    stuck = {s for s in TenantStatus if not any(can_transition(s, t) for t in TenantStatus)}
    assert stuck == {S.DELETED}


def test_deleted_is_entered_only_from_deleting() -> None:
    assert [s for s in TenantStatus if can_transition(s, S.DELETED)] == [S.DELETING]


def test_active_is_left_only_by_a_deletion_or_a_move() -> None:
    assert {t for t in TenantStatus if can_transition(S.ACTIVE, t)} == {
        S.DELETION_SCHEDULED,
        S.MOVING,
    }


def test_moving_is_entered_only_from_active_and_left_only_for_active() -> None:
    assert [s for s in TenantStatus if can_transition(s, S.MOVING)] == [S.ACTIVE]
    assert [t for t in TenantStatus if can_transition(S.MOVING, t)] == [S.ACTIVE]


def test_a_moving_tenant_is_neither_deletable_nor_being_deleted() -> None:
    assert S.MOVING not in DELETABLE
    assert S.MOVING not in DELETION_STATUSES
    assert decide(S.MOVING, S.DELETION_SCHEDULED) is Decision.REFUSE


@pytest.mark.parametrize("status", sorted(set(TenantStatus) - {S.ACTIVE, S.MOVING}), ids=str)
def test_a_transition_never_starts_or_ends_a_move(status: TenantStatus) -> None:
    # Only a move's own writes (infra.db.tenant_moves) take these edges: a late provisioning
    # step asking for ACTIVE must not end a move, nor a plain transition begin one.
    assert decide(S.ACTIVE, S.MOVING) is Decision.REFUSE
    assert decide(S.MOVING, S.ACTIVE) is Decision.REFUSE
    assert decide(status, S.MOVING, moving=True) is Decision.REFUSE
    assert decide(S.MOVING, status, moving=True) is Decision.REFUSE


def test_a_failed_provisioning_is_left_by_starting_over_or_a_deletion() -> None:
    assert {t for t in TenantStatus if can_transition(S.PROVISION_ERROR, t)} == {
        S.PROVISIONING,
        S.DELETION_SCHEDULED,
    }


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


def test_restore_applies_only_from_deletion_scheduled() -> None:
    restored_from = {
        source
        for source, target in ALL_PAIRS
        if decide(source, target, restoring=True) is Decision.APPLY
    }
    assert restored_from == {S.DELETION_SCHEDULED}


# Sorted: sets iterate in a per-process order, and every xdist worker must collect the same list.
@pytest.mark.parametrize(
    ("source", "target"),
    list(product(sorted(DELETION_STATUSES), sorted(LIFE))),
    ids=lambda s: str(s),
)
def test_no_transition_but_restore_leaves_a_deletion_for_the_tenants_life(
    source: TenantStatus, target: TenantStatus
) -> None:
    # A late provisioning activity (never a restore) lands after the deletion was asked.
    assert decide(source, target) is Decision.REFUSE
