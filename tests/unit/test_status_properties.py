"""Property-based checks of the guarded status transition (`tenancy.status.decide`, which the
repositories' `transition`, `schedule` and `restore` apply under a row lock).

The expected machine is copied from ARCHITECTURE.md, not read from `ALLOWED_SOURCES`, so a
change to the table that breaks the documented machine fails here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tenancy.status import Decision, TenantStatus, decide
from tests.unit.documented_machine import DELETION, DOCUMENTED, FORWARD, LIFE, MOVE, RESTORE

S = TenantStatus
# Nothing leaves DELETED; every other status has a way out.
TERMINAL = frozenset({S.DELETED})
# Where a deletion's restore returns a tenant whose provisioning run it stopped.
STOPPED_TO = {S.PROVISIONING: S.PROVISION_ERROR, S.MIGRATING: S.MIGRATION_ERROR}


@dataclass(frozen=True)
class Restore:
    """An attempt to restore the tenant to `target` (what `DeletionRepository.restore` asks)."""

    target: TenantStatus


@dataclass(frozen=True)
class Move:
    """A move's own write to `target` (what `MoveRepository` begins, switches or rolls back)."""

    target: TenantStatus


Attempt = TenantStatus | Restore | Move
# (source, target, how): "transition", "restore" or "move".
Edge = tuple[TenantStatus, TenantStatus, str]
_EDGES = {"transition": FORWARD, "restore": RESTORE, "move": MOVE}


def _reachable() -> frozenset[TenantStatus]:
    seen = {S.PROVISIONING}
    frontier = [S.PROVISIONING]
    while frontier:
        source = frontier.pop()
        for edge_source, edge_target in DOCUMENTED:
            if edge_source is source and edge_target not in seen:
                seen.add(edge_target)
                frontier.append(edge_target)
    return frozenset(seen)


REACHABLE = _reachable()
statuses = st.sampled_from(list(TenantStatus))
attempts = st.one_of(statuses, statuses.map(Restore), statuses.map(Move))


def deliver(current: TenantStatus, attempt: Attempt) -> tuple[Decision, Edge]:
    """The guarded transition's decision for one attempt, and the edge it would take."""
    if isinstance(attempt, Restore):
        target, how = attempt.target, "restore"
    elif isinstance(attempt, Move):
        target, how = attempt.target, "move"
    else:
        target, how = attempt, "transition"
    decision = decide(current, target, restoring=how == "restore", moving=how == "move")
    return decision, (current, target, how)


def applied_edges(attempted: Sequence[Attempt], start: TenantStatus = S.PROVISIONING) -> list[Edge]:
    """The edges the row takes when each attempt is decided as the repositories do."""
    edges: list[Edge] = []
    current = start
    for attempt in attempted:
        decision, edge = deliver(current, attempt)
        if decision is Decision.APPLY:
            edges.append(edge)
            current = edge[1]
    return edges


def apply_all(targets: Sequence[Attempt], start: TenantStatus = S.PROVISIONING) -> list[S]:
    """The statuses the row goes through when each attempt is decided as `transition` does."""
    return [start, *(target for _, target, _ in applied_edges(targets, start))]


def assert_legal_edges(edges: list[Edge]) -> None:
    """Each edge is documented, restore edges are taken by restores alone and move edges by
    moves alone, and a deletion is left for the tenant's life only by a restore from
    DELETION_SCHEDULED."""
    for source, target, how in edges:
        assert (source, target) in _EDGES[how], (
            f"{source} -> {target} ({how}) is not in the machine"
        )
        assert source not in TERMINAL, f"left terminal {source}"
        if source in DELETION and target in LIFE:
            assert how == "restore", f"{source} -> {target} undid a deletion without a restore"
            assert source is S.DELETION_SCHEDULED, f"{source} -> {target} restored a purge"


def assert_legal_path(path: list[TenantStatus]) -> None:
    assert path[0] is S.PROVISIONING
    for source, target in itertools.pairwise(path):
        assert (source, target) in DOCUMENTED, f"{source} -> {target} is not in the machine"
        assert source not in TERMINAL, f"left terminal {source}"
    assert path[-1] in REACHABLE


def legal_run() -> st.SearchStrategy[list[TenantStatus]]:
    """The transitions one provisioning run asks for, in its own order: storage fails, or
    MIGRATING, any number of failed-then-retried cycles, and maybe ACTIVE."""
    provision_error = st.just([S.PROVISION_ERROR])
    migrating = st.tuples(st.integers(0, 4), st.booleans()).map(
        lambda c: (
            [S.MIGRATING]
            + [S.MIGRATION_ERROR, S.MIGRATING] * c[0]
            + ([S.ACTIVE] if c[1] else [S.MIGRATION_ERROR])
        )
    )
    return st.one_of(provision_error, migrating)


def deletion_run() -> st.SearchStrategy[list[TenantStatus]]:
    """The transitions one deletion run asks for: scheduled, maybe the purge, any number of
    failed-then-retried purges, and maybe DELETED."""
    return st.tuples(st.booleans(), st.integers(0, 3), st.booleans()).map(
        lambda c: (
            [S.DELETION_SCHEDULED]
            + (
                [S.DELETING]
                + [S.DELETION_ERROR, S.DELETING] * c[1]
                + ([S.DELETED] if c[2] else [S.DELETION_ERROR])
                if c[0]
                else []
            )
        )
    )


@given(
    st.one_of(statuses.map(lambda s: None), statuses),
    statuses,
    st.sampled_from(sorted(_EDGES)),
)
def test_decide_is_the_documented_rule(
    current: TenantStatus | None, target: TenantStatus, how: str
) -> None:
    expected = (
        Decision.NO_OP
        if current is target
        else Decision.APPLY
        if (current, target) in _EDGES[how]
        else Decision.REFUSE
    )
    assert decide(current, target, restoring=how == "restore", moving=how == "move") is expected


@given(st.lists(attempts, max_size=40))
def test_any_sequence_of_attempts_only_follows_documented_edges(attempted: list[Attempt]) -> None:
    edges = applied_edges(attempted)

    assert_legal_edges(edges)
    assert_legal_path(apply_all(attempted))


@given(statuses, st.lists(attempts, max_size=40))
def test_no_path_leads_out_of_deleted(start: TenantStatus, attempted: list[Attempt]) -> None:
    path = apply_all(attempted, start)

    assert apply_all(attempted, S.DELETED) == [S.DELETED]
    if S.DELETED in path:
        assert path.index(S.DELETED) == len(path) - 1


@given(statuses, st.lists(attempts, max_size=40))
def test_restore_only_from_deletion_scheduled(
    start: TenantStatus, attempted: list[Attempt]
) -> None:
    for source, target, how in applied_edges(attempted, start):
        if how == "restore":
            assert source is S.DELETION_SCHEDULED
            assert target in {S.ACTIVE, S.PROVISION_ERROR, S.MIGRATION_ERROR}


@given(statuses, st.lists(attempts, max_size=40))
def test_a_move_starts_only_from_active_and_ends_only_by_a_move(
    start: TenantStatus, attempted: list[Attempt]
) -> None:
    for source, target, how in applied_edges(attempted, start):
        if S.MOVING in (source, target):
            assert how == "move", f"{source} -> {target} taken by a {how}"
            assert {source, target} == {S.ACTIVE, S.MOVING}
        if how == "move":
            assert S.MOVING in (source, target)


@given(st.lists(attempts, max_size=40))
def test_a_moving_tenant_is_never_scheduled_for_deletion(attempted: list[Attempt]) -> None:
    path = apply_all([*attempted], S.MOVING)

    if S.DELETION_SCHEDULED in path:
        # Only after its move ended (switched or rolled back): MOVING -> ACTIVE first.
        assert path.index(S.ACTIVE) < path.index(S.DELETION_SCHEDULED)


@given(st.sampled_from(sorted(DELETION)), st.lists(statuses, max_size=40))
def test_without_a_restore_a_deletion_is_never_undone(
    start: TenantStatus, targets: list[TenantStatus]
) -> None:
    # Late provisioning activities (and anything else but a restore) after the deletion.
    path = apply_all(targets, start)

    assert set(path) <= DELETION


@given(statuses, st.lists(st.tuples(attempts, st.integers(1, 3)), max_size=20))
def test_a_repeat_is_a_no_op(start: TenantStatus, attempted: list[tuple[Attempt, int]]) -> None:
    once = [attempt for attempt, _ in attempted]
    repeated = [attempt for attempt, n in attempted for _ in range(n)]

    assert apply_all(repeated, start) == apply_all(once, start)
    for attempt in once:
        target = attempt.target if isinstance(attempt, Restore | Move) else attempt
        assert deliver(target, attempt)[0] is Decision.NO_OP


@given(legal_run(), st.data())
def test_repeated_completions_change_nothing(run: list[TenantStatus], data: st.DataObject) -> None:
    # Each completion delivered one or more times, in the run's order (a retried activity).
    repeats = data.draw(st.lists(st.integers(1, 3), min_size=len(run), max_size=len(run)))
    delivered: list[Attempt] = [
        target for target, n in zip(run, repeats, strict=True) for _ in range(n)
    ]

    assert apply_all(delivered) == [S.PROVISIONING, *run]


@given(legal_run(), st.data())
def test_reordered_and_repeated_completions_never_break_the_machine(
    run: list[TenantStatus], data: st.DataObject
) -> None:
    extra = data.draw(st.lists(st.sampled_from(run), max_size=2 * len(run)))
    delivered = data.draw(st.permutations(run + extra))

    path = apply_all(delivered)

    assert_legal_path(path)
    assert set(path[1:]) <= set(run)
    # Without a deletion, ACTIVE, once reached, is where the tenant stays whatever lands late.
    if S.ACTIVE in path:
        assert path[-1] is S.ACTIVE


@given(legal_run(), st.integers(0, 12), deletion_run(), st.data())
def test_a_deletion_racing_late_provisioning_completions_is_never_undone(
    run: list[TenantStatus], cut: int, deletion: list[TenantStatus], data: st.DataObject
) -> None:
    # The deletion is asked part-way through the provisioning run; the run's later
    # completions (and repeats of earlier ones) land interleaved with the purge's.
    done, late = run[:cut], run[cut:]
    late = late + data.draw(st.lists(st.sampled_from(run), max_size=len(run)))
    late = data.draw(st.permutations(late))
    positions = sorted(
        data.draw(st.lists(st.integers(0, len(deletion)), min_size=len(late), max_size=len(late)))
    )
    delivered: list[Attempt] = list(done)
    for index, step in enumerate(deletion):
        delivered += [late[i] for i, at in enumerate(positions) if at == index]
        delivered.append(step)
    delivered += [late[i] for i, at in enumerate(positions) if at == len(deletion)]

    path = apply_all(delivered)

    assert_legal_edges(applied_edges(delivered))
    # The deletion's own steps all land, in order, whatever the provisioning run sends late.
    scheduled = path.index(S.DELETION_SCHEDULED)
    assert path[scheduled:] == deletion


class LateCompletions(RuleBasedStateMachine):
    """A provisioning workflow walks the machine and its transitions are applied to the row; a
    deletion workflow may be asked at any point (stopping the provisioning run), restored, and
    asked again; meanwhile earlier completions of either are replayed late (a timed-out attempt
    that still lands, a retry of an activity already completed) and arbitrary transitions and
    restores are attempted (an operator racing the workflows, a bug)."""

    @initialize()
    def start(self) -> None:
        self.row = S.PROVISIONING
        # The status the running workflow last set, and which workflow that is.
        self.workflow = S.PROVISIONING
        self.deleting = False
        self.restore_to = S.ACTIVE
        self.asked_at = 0
        self.path = [S.PROVISIONING]
        self.edges: list[Edge] = []
        self.issued: list[TenantStatus] = []
        self.restores: list[TenantStatus] = []
        self.moves: list[TenantStatus] = []
        self.disturbed = False

    def _deliver(self, attempt: Attempt) -> Decision:
        decision, edge = deliver(self.row, attempt)
        if decision is Decision.APPLY:
            self.row = edge[1]
            self.path.append(edge[1])
            self.edges.append(edge)
        return decision

    def _next(self, among: frozenset[TenantStatus]) -> list[TenantStatus]:
        return sorted(t for s, t in FORWARD if s is self.workflow and t in among)

    @precondition(lambda self: not self.deleting and self._next(LIFE))
    @rule(data=st.data())
    def provisioning_advances(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self._next(LIFE)))
        self.workflow = target
        self.issued.append(target)
        self._deliver(target)

    @precondition(lambda self: not self.deleting and self.row in LIFE)
    @rule()
    def deletion_asked(self) -> None:
        # DELETE stops the provisioning run; restore returns to where that run was left.
        self.restore_to = STOPPED_TO.get(self.row, self.row)
        self.deleting = True
        self.asked_at = len(self.edges)
        self.workflow = S.DELETION_SCHEDULED
        self.issued.append(S.DELETION_SCHEDULED)
        assert self._deliver(S.DELETION_SCHEDULED) is Decision.APPLY

    @precondition(lambda self: self.deleting and self._next(DELETION - {S.DELETION_SCHEDULED}))
    @rule(data=st.data())
    def deletion_advances(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self._next(DELETION - {S.DELETION_SCHEDULED})))
        self.workflow = target
        self.issued.append(target)
        self._deliver(target)

    @precondition(lambda self: self.deleting and self.workflow is S.DELETION_SCHEDULED)
    @rule()
    def restored(self) -> None:
        before = self.row
        decision = self._deliver(Restore(self.restore_to))
        if before is S.DELETION_SCHEDULED:
            assert decision is Decision.APPLY
        self.restores.append(self.restore_to)
        self.deleting = False
        self.workflow = self.restore_to

    @precondition(lambda self: not self.deleting and self.workflow is S.ACTIVE)
    @rule()
    def move_begins(self) -> None:
        before = self.row
        decision = self._deliver(Move(S.MOVING))
        if before is S.ACTIVE:
            assert decision is Decision.APPLY
        self.moves.append(S.MOVING)
        self.workflow = S.MOVING

    @precondition(lambda self: self.workflow is S.MOVING)
    @rule()
    def move_ends(self) -> None:
        # Switched or rolled back: ACTIVE either way (on the target or on the source).
        before = self.row
        decision = self._deliver(Move(S.ACTIVE))
        if before is S.MOVING:
            assert decision is Decision.APPLY
        self.moves.append(S.ACTIVE)
        self.workflow = S.ACTIVE

    @precondition(lambda self: bool(self.moves))
    @rule(data=st.data())
    def late_move_write(self, data: st.DataObject) -> None:
        before = self.row
        if self._deliver(Move(data.draw(st.sampled_from(self.moves)))) is Decision.APPLY:
            assert before in {S.ACTIVE, S.MOVING}
            self.disturbed = True

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data())
    def late_completion(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self.issued))
        before = self.row
        decision = self._deliver(target)
        if before in TERMINAL:
            assert decision is not Decision.APPLY
        if before in DELETION and target in LIFE:
            # A late provisioning activity cannot undo a deletion.
            assert decision is not Decision.APPLY
        if S.MOVING in (before, target):
            # Nor start or end a move.
            assert decision is not Decision.APPLY
        if decision is Decision.APPLY:
            self.disturbed = True

    @precondition(lambda self: bool(self.restores))
    @rule(data=st.data())
    def late_restore(self, data: st.DataObject) -> None:
        before = self.row
        if self._deliver(Restore(data.draw(st.sampled_from(self.restores)))) is Decision.APPLY:
            assert before is S.DELETION_SCHEDULED
            self.disturbed = True

    @rule(attempted=attempts)
    def arbitrary_attempt(self, attempted: Attempt) -> None:
        if self._deliver(attempted) is Decision.APPLY:
            self.disturbed = True

    @invariant()
    def only_documented_edges(self) -> None:
        assert_legal_path(self.path)
        assert_legal_edges(self.edges)

    @invariant()
    def terminal_is_final(self) -> None:
        for index, status in enumerate(self.path):
            if status in TERMINAL:
                assert index == len(self.path) - 1

    @invariant()
    def a_deletion_holds_until_restored(self) -> None:
        # Only a restore ends a deletion: the workflow's own, or a late or arbitrary one (a
        # restore cannot tell which deletion it was meant for; `decide` only sees statuses).
        restored = any(how == "restore" for _, _, how in self.edges[self.asked_at :])
        if self.deleting and not restored:
            assert self.row in DELETION

    @invariant()
    def undisturbed_row_follows_the_workflow(self) -> None:
        if not self.disturbed:
            assert self.row is self.workflow


LateCompletions.TestCase.settings = settings(max_examples=200, stateful_step_count=30)
TestLateCompletions = LateCompletions.TestCase
