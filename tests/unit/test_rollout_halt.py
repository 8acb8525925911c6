"""The halt rule as a batch applies it before each tenant it starts: the wave's counts at the
batch's start, plus the batch's own results, since the last resume from a halt."""

from __future__ import annotations

from activities.rollouts import HaltTally
from tenancy.rollouts import RolloutCounts, RolloutTenantStatus, halts_since


def test_the_halt_is_decided_once_min_10_or_the_wave_finished() -> None:
    wave = RolloutCounts(total=12, pending=3, failed=8, succeeded=1)
    assert not halts_since(wave, None, 0.2)
    assert halts_since(wave.model_copy(update={"failed": 9}), None, 0.2)
    small = RolloutCounts(total=2, failed=1, succeeded=1)
    assert halts_since(small, None, 0.2)


def test_after_a_resume_only_what_finished_since_counts() -> None:
    baseline = RolloutCounts(total=40, failed=9, succeeded=1, pending=30)
    since = RolloutCounts(total=40, failed=10, succeeded=10, pending=20)
    # 1 failed of 10 since the resume: 10% is under 20%, whatever came before.
    assert not halts_since(since, baseline, 0.2)
    assert halts_since(since.model_copy(update={"failed": 12}), baseline, 0.2)


def test_a_batch_tally_halts_at_the_tenant_that_crosses_the_limit() -> None:
    tally = HaltTally(RolloutCounts(total=12, pending=12), None, 0.2)
    results = [RolloutTenantStatus.SUCCEEDED] * 2 + [RolloutTenantStatus.FAILED] * 8
    for finished, result in enumerate(results, start=1):
        assert not tally.halted, finished
        tally.add(result)
    assert tally.halted
    assert tally.counts.failed == 8
    assert tally.counts.succeeded == 2


def test_a_batch_without_a_ratio_never_halts_itself() -> None:
    tally = HaltTally(RolloutCounts(total=10, failed=10), None, None)
    assert not tally.halted
