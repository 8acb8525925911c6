"""The statusReason a move's rollback writes before it starts, read back by a run started
again over it (tenancy.moves)."""

from __future__ import annotations

import pytest

from tenancy.moves import rollback_reason, rollback_under_way


@pytest.mark.parametrize("cancelled", [True, False])
@pytest.mark.parametrize("waiting", [None, "dropping the partial target on pg-b failed: down"])
def test_a_rollback_reason_reads_back_with_its_cause_and_kind(
    cancelled: bool, waiting: str | None
) -> None:
    cause = "copying failed: pg_dump refused (exit 1)"
    written = rollback_reason(cause, cancelled=cancelled, waiting=waiting)
    assert rollback_under_way(written) == (cause, cancelled)


@pytest.mark.parametrize("other", [None, "", "rolled back", "copying failed", "ACTIVE"])
def test_any_other_reason_names_no_rollback(other: str | None) -> None:
    assert rollback_under_way(other) is None
