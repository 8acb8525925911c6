"""The pieces of the unpolled-queue bound that need no server: the setting, the options a
migration call gets, and how the reconciler judges a queue's pollers and words a report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from reconciliation.queues import POLLER_GONE_AFTER, UnpolledCall, is_polled
from tenancy.contracts import MigrationRetry
from tenancy.settings import Settings
from workflows.provision.options import migrate_service_options

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("clean_env")


def retry(schedule_to_start: timedelta | None) -> MigrationRetry:
    return MigrationRetry(
        max_attempts=3,
        initial_interval=timedelta(seconds=1),
        max_interval=timedelta(seconds=30),
        timeout=timedelta(seconds=60),
        schedule_to_start=schedule_to_start,
    )


def test_the_bound_defaults_to_five_minutes_and_reads_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().migration_schedule_to_start == timedelta(minutes=5)
    monkeypatch.setenv("PLATFORM_MIGRATION_SCHEDULE_TO_START", "2.5")
    assert Settings().migration_schedule_to_start == timedelta(seconds=2.5)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bound_that_is_not_a_positive_duration_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PLATFORM_MIGRATION_SCHEDULE_TO_START", value)
    with pytest.raises(ValidationError, match="migration_schedule_to_start"):
        Settings()


def test_only_a_bounded_call_gets_the_schedule_to_start_timeout() -> None:
    bound = timedelta(seconds=90)
    queue = "platform-tenants.migrate.auth"
    assert migrate_service_options(retry(bound), queue, bounded_wait=True).schedule_to_start == (
        bound
    )
    assert migrate_service_options(retry(bound), queue).schedule_to_start is None
    # A plan recorded before the bound existed: the call waits as it always did.
    assert migrate_service_options(retry(None), queue, bounded_wait=True).schedule_to_start is None


def test_a_poller_silent_for_longer_than_a_long_poll_is_taken_for_gone() -> None:
    assert is_polled(NOW - timedelta(seconds=5), NOW)
    assert not is_polled(NOW - POLLER_GONE_AFTER, NOW)
    assert not is_polled(None, NOW)


def test_a_call_on_a_workflow_queue_is_named_by_its_activity() -> None:
    call = UnpolledCall(
        tenant_id="acme",
        task_queue="platform-tenants",
        activity="teardown_service",
        service=None,
        waiting_since=NOW,
        last_poll=NOW - timedelta(minutes=3),
    )
    assert call.describe() == (
        "no worker polls queue platform-tenants for activity teardown_service "
        "(call waiting since 2026-12-06T12:00:00+00:00, last poll 2026-12-06T11:57:00+00:00; "
        "report only)"
    )
