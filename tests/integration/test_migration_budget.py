"""A service's migration attempts are spent only on calls that reached it (or timed out
talking to it): failures of the platform's own bookkeeping are retried without counting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.models import SlaTier, StorageMode, Tenant, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec(tenant_id: str) -> TenantSpec:
    return TenantSpec(
        id=tenant_id, name="Budget", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )


@contextmanager
def failing_attempt_writes(database_url: str, tenant_id: str, times: int) -> Iterator[None]:
    """The metadata database cancels the first `times` writes that count a started call for
    `tenant_id` (SQLSTATE 57014, as a statement timeout under load does). A sequence counts
    them: it is not rolled back with the failed statement."""
    suffix = tenant_id
    seq, fn, trigger = (sql.Identifier(f"{kind}_{suffix}") for kind in ("seq", "fn", "trg"))
    body = sql.SQL(
        """
        BEGIN
            IF NEW.tenant_id = {tenant} AND NEW.attempts > OLD.attempts
               AND nextval({seq_name}) <= {times} THEN
                RAISE EXCEPTION 'canceling statement due to statement timeout'
                    USING ERRCODE = 'query_canceled';
            END IF;
            RETURN NEW;
        END
        """
    ).format(
        tenant=sql.Literal(tenant_id),
        seq_name=sql.Literal(f"seq_{suffix}"),
        times=sql.Literal(times),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SEQUENCE {}").format(seq))
        conn.execute(
            # SECURITY DEFINER: the sequence is this (super)user's; the platform's role writes.
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS {}"
            ).format(fn, sql.Literal(body.as_string(conn)))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} BEFORE UPDATE ON tenant_migrations "
                "FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(trigger, fn)
        )
    try:
        yield
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TRIGGER {} ON tenant_migrations").format(trigger))
            conn.execute(sql.SQL("DROP FUNCTION {}()").format(fn))
            conn.execute(sql.SQL("DROP SEQUENCE {}").format(seq))


async def settled(tenants: TenantRepository, tenant_id: str) -> Tenant:
    tenant = await eventually(
        lambda: tenants.get(tenant_id),
        lambda t: t is not None and t.status in (TenantStatus.ACTIVE, TenantStatus.MIGRATION_ERROR),
        timeout=60,
    )
    assert tenant is not None
    return tenant


async def test_bookkeeping_failures_before_the_call_do_not_consume_attempts(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    platform_db_url: str,
    service: tuple[ScriptedService, str],
) -> None:
    scripted, url = service
    settings = make_settings(("backend-service", url), migration_max_attempts=2)
    tenant_id = unique_id("books")
    # Twice the attempt budget: each failed write would have spent one attempt.
    with failing_attempt_writes(platform_db_url, tenant_id, times=4):
        async with running_worker(temporal_client, settings):
            await WorkflowGateway(temporal_client, settings).provision(spec(tenant_id))
            tenant = await settled(tenants, tenant_id)
            if tenant.status is TenantStatus.MIGRATION_ERROR:
                await temporal_client.get_workflow_handle_for(
                    ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
                ).terminate("test done")

    assert tenant.status is TenantStatus.ACTIVE, tenant
    (record,) = tenant.migrations
    assert (record.status, record.attempts) == (MigrationStatus.SUCCEEDED, 1)
    assert len(scripted.calls_for(tenant_id)) == 1


async def test_exactly_max_attempts_calls_reach_a_failing_service(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    platform_db_url: str,
    service: tuple[ScriptedService, str],
) -> None:
    scripted, url = service
    settings = make_settings(("backend-service", url), migration_max_attempts=3)
    tenant_id = unique_id("budget")
    scripted.script(tenant_id, 503)
    with failing_attempt_writes(platform_db_url, tenant_id, times=2):
        async with running_worker(temporal_client, settings):
            await WorkflowGateway(temporal_client, settings).provision(spec(tenant_id))
            tenant = await settled(tenants, tenant_id)
            await temporal_client.get_workflow_handle_for(
                ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
            ).terminate("test done")

    assert tenant.status is TenantStatus.MIGRATION_ERROR, tenant
    (record,) = tenant.migrations
    assert record.status is MigrationStatus.FAILED
    assert record.attempts == 3
    assert record.last_error is not None
    assert "HTTP 503" in record.last_error
    calls = scripted.calls_for(tenant_id)
    assert len(calls) == 3
    # One logical call: every attempt carried the same key.
    assert len({call.idempotency_key for call in calls}) == 1
