"""`kill -9` of the worker (which runs the outbox relay) with lifecycle events committed but
not yet published, and with events the bus acknowledged but the relay had not stamped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from devstack.nats import EmbeddedNats
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, settings_env, settle, spec, until
from tests.support.events import stored_count, tap
from tests.support.polling import eventually
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def outbox(db_url: str, tenant_id: str) -> list[tuple[str, bool]]:
    """The tenant's outbox rows in publish order: (event id, published)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT id::text, published_at IS NOT NULL FROM event_outbox
               WHERE subject_key = %s ORDER BY seq""",
            (tenant_id,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def forget_publication(db_url: str, tenant_id: str) -> None:
    """As if the relay died after the bus's acks and before its stamp."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE event_outbox SET published_at = NULL WHERE subject_key = %s", (tenant_id,)
        )


async def test_events_committed_before_a_worker_kill_are_published_once_after_restart(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    platform_db_url: str,
    ledger: FaultLedger,
) -> None:
    bus = EmbeddedNats(tmp_path / "nats", free_port())
    bus.start()
    acked, pending = unique_id("evack"), unique_id("evpend")
    with serve(ScriptedService().app()) as url:
        settings = make_settings(
            ("backend-service", url), events_backend="nats", events_url=bus.url
        )
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        try:
            await worker.start()
            gateway = WorkflowGateway(temporal_client, settings)
            await gateway.provision(spec(acked))
            await settle(tenants, [acked])
            await until(lambda: all(done for _, done in outbox(platform_db_url, acked)))
            assert await stored_count(bus.url, f"platform.tenants.{acked}.>") == 3

            # The bus goes away: the next tenant's events commit and cannot be published.
            bus.stop()
            forget_publication(platform_db_url, acked)
            await gateway.provision(spec(pending))
            rows = await settle(tenants, [pending])
            assert rows[pending].status is TenantStatus.ACTIVE
            assert not any(done for _, done in outbox(platform_db_url, pending))

            worker.kill()
            ledger.fault("worker kill -9 with lifecycle events unpublished")
            bus.start()
            await worker.start()
            await until(
                lambda: all(
                    done
                    for tenant_id in (acked, pending)
                    for _, done in outbox(platform_db_url, tenant_id)
                )
            )
        finally:
            worker.kill()

        try:
            async with tap(bus.url, "platform.tenants.>") as seen:

                async def mine() -> list[dict[str, object]]:
                    return [e for e in seen.events if e["subject"] in (acked, pending)]

                events = await eventually(mine, lambda found: len(found) >= 6)
            stored = await stored_count(bus.url, f"platform.tenants.{acked}.>")
        finally:
            bus.stop()

    ledger.outcome([acked, pending], [acked, pending])
    for tenant_id in (acked, pending):
        expected = [event_id for event_id, _ in outbox(platform_db_url, tenant_id)]
        assert [e["id"] for e in events if e["subject"] == tenant_id] == expected
    # The republish of the acknowledged events was dropped by JetStream's duplicate window.
    assert stored == 3
    assert len({e["id"] for e in events}) == len(events) == 6
