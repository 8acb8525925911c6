"""Property-based checks of the guarded status transition (`tenancy.status.decide`, which the
repository's `transition` applies under a row lock).

The expected machine is copied from ARCHITECTURE.md, not read from `ALLOWED_SOURCES`, so a
change to the table that breaks the documented machine fails here.
"""

from __future__ import annotations

import itertools

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

S = TenantStatus
DOCUMENTED = frozenset(
    {
        (S.PROVISIONING, S.MIGRATING),
        (S.PROVISIONING, S.PROVISION_ERROR),
        (S.MIGRATING, S.ACTIVE),
        (S.MIGRATING, S.MIGRATION_ERROR),
        (S.MIGRATION_ERROR, S.MIGRATING),
        # retry-provisioning: a new run adopts the tenant and starts over.
        (S.PROVISION_ERROR, S.PROVISIONING),
    }
)
# PROVISION_ERROR is left only by adoption (-> PROVISIONING), which DOCUMENTED allows.
TERMINAL = frozenset({S.ACTIVE})


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


def apply_all(targets: list[TenantStatus], start: TenantStatus = S.PROVISIONING) -> list[S]:
    """The statuses the row goes through when each attempt is decided as `transition` does."""
    path = [start]
    for target in targets:
        if decide(path[-1], target) is Decision.APPLY:
            path.append(target)
    return path


def assert_legal_path(path: list[TenantStatus]) -> None:
    assert path[0] is S.PROVISIONING
    for source, target in itertools.pairwise(path):
        assert (source, target) in DOCUMENTED, f"{source} -> {target} is not in the machine"
        assert source not in TERMINAL, f"left terminal {source}"
    assert path[-1] in REACHABLE


def legal_run() -> st.SearchStrategy[list[TenantStatus]]:
    """The transitions one workflow run asks for, in its own order: storage fails, or
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


@given(st.one_of(statuses.map(lambda s: None), statuses), statuses)
def test_decide_is_the_documented_rule(current: TenantStatus | None, target: TenantStatus) -> None:
    expected = (
        Decision.NO_OP
        if current is target
        else Decision.APPLY
        if (current, target) in DOCUMENTED
        else Decision.REFUSE
    )
    assert decide(current, target) is expected


@given(st.lists(statuses, max_size=40))
def test_any_sequence_of_attempts_only_follows_documented_edges(targets: list[S]) -> None:
    assert_legal_path(apply_all(targets))


@given(legal_run(), st.data())
def test_repeated_completions_change_nothing(run: list[TenantStatus], data: st.DataObject) -> None:
    # Each completion delivered one or more times, in the run's order (a retried activity).
    repeats = data.draw(st.lists(st.integers(1, 3), min_size=len(run), max_size=len(run)))
    delivered = [target for target, n in zip(run, repeats, strict=True) for _ in range(n)]

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
    # A terminal status, once reached, is where the tenant stays whatever arrives late.
    if path[-1] not in TERMINAL:
        assert not TERMINAL & set(path)


class LateCompletions(RuleBasedStateMachine):
    """A workflow walks the machine and its transitions are applied to the row; meanwhile
    earlier completions are replayed late (a timed-out attempt that still lands, a retry of an
    activity already completed) and arbitrary transitions are attempted (an operator racing
    the workflow, a bug)."""

    @initialize()
    def start(self) -> None:
        self.row = S.PROVISIONING
        self.workflow = S.PROVISIONING
        self.path = [S.PROVISIONING]
        self.issued: list[TenantStatus] = []
        self.disturbed = False

    def _deliver(self, target: TenantStatus) -> Decision:
        decision = decide(self.row, target)
        if decision is Decision.APPLY:
            self.row = target
            self.path.append(target)
        return decision

    @precondition(lambda self: self.workflow not in TERMINAL)
    @rule(data=st.data())
    def workflow_advances(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from([t for s, t in DOCUMENTED if s is self.workflow]))
        self.workflow = target
        self.issued.append(target)
        self._deliver(target)

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data())
    def late_completion(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self.issued))
        before = self.row
        decision = self._deliver(target)
        if before in TERMINAL:
            assert decision is not Decision.APPLY
        if decision is Decision.APPLY:
            self.disturbed = True
            # Only the retry cycle can be re-entered by a late completion, never a terminal one.
            assert target not in TERMINAL or target not in self.path[:-1]

    @rule(attempted=statuses)
    def arbitrary_attempt(self, attempted: TenantStatus) -> None:
        if self._deliver(attempted) is Decision.APPLY:
            self.disturbed = True

    @invariant()
    def only_documented_edges(self) -> None:
        assert_legal_path(self.path)

    @invariant()
    def terminal_is_final(self) -> None:
        for index, status in enumerate(self.path):
            if status in TERMINAL:
                assert index == len(self.path) - 1

    @invariant()
    def undisturbed_row_follows_the_workflow(self) -> None:
        if not self.disturbed:
            assert self.row is self.workflow


LateCompletions.TestCase.settings = settings(max_examples=200, stateful_step_count=30)
TestLateCompletions = LateCompletions.TestCase
