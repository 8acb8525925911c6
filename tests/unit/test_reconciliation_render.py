"""`make reconcile`'s text report names a rollout's drift by its rollout id."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciliation.__main__ import render
from reconciliation.reconciler import Drift, DriftKind, ReconciliationReport


def test_a_rollout_without_a_run_is_named_by_its_rollout_id() -> None:
    report = ReconciliationReport(
        drift=[
            Drift(
                kind=DriftKind.ROLLOUT_WITHOUT_RUN,
                rollout_id="0123456789ab",
                detail="rollout is PAUSED, its run is completed",
                repaired=True,
            )
        ],
        checked_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )

    lines = render(report).splitlines()

    assert lines[1].split() == [
        "ROLLOUT_WITHOUT_RUN",
        "rollout",
        "0123456789ab",
        "rollout",
        "is",
        "PAUSED,",
        "its",
        "run",
        "is",
        "completed",
        "[repaired]",
    ]
