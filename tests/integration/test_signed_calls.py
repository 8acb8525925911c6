"""Signed migrate calls end to end: the real worker signs, the real reference service verifies.

A service that trusts the platform's key migrates the tenant; one that does not (another key, or
another name than the audience the platform signs for) answers 401, which the platform does not
retry and reports, reason included, as the tenant's `lastError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.settings import DownstreamSettings
from infra.db.repository import TenantRepository
from infra.security.keys import generate_private_key
from tenancy.models import MigrationRecord, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.servers import serve
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BACKEND_VERSION = "backend_0002_project_archiving"


def _reference_service(name: str, database_url: str, key_file: Path) -> DownstreamSettings:
    return DownstreamSettings(
        service_name=name, database_url=database_url, platform_public_key_file=key_file
    )


@pytest.fixture(scope="module")
def trusting(service_database_urls: dict[str, str], keys_dir: Path) -> Iterator[str]:
    """backend-service verifying with the platform's own key file."""
    settings = _reference_service(
        "backend-service",
        service_database_urls["backend-service"],
        keys_dir / "platform-signing.pem",
    )
    with serve(create_downstream_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def other_key(
    service_database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """backend-service verifying with a key that is not the platform's."""
    stranger = Path(tmp_path_factory.mktemp("stranger")) / "stranger.pem"
    generate_private_key(stranger)
    with serve(
        create_downstream_app(
            _reference_service(
                "backend-service", service_database_urls["backend-service"], stranger
            )
        )
    ) as url:
        yield url


@pytest.fixture(scope="module")
def misnamed(service_database_urls: dict[str, str], keys_dir: Path) -> Iterator[str]:
    """auth-service, where the platform believes backend-service runs."""
    settings = _reference_service(
        "auth-service", service_database_urls["auth-service"], keys_dir / "platform-signing.pem"
    )
    with serve(create_downstream_app(settings)) as url:
        yield url


def _spec() -> TenantSpec:
    return TenantSpec(
        id=unique_id("sig"), name="Signed", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )


def _tables(storage_db_url: str, schema: str) -> set[str]:
    with psycopg.connect(storage_db_url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


async def test_a_trusting_service_migrates_the_tenant(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    trusting: str,
    storage_db_url: str,
) -> None:
    settings = make_settings(("backend-service", trusting))
    request = _spec()
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        final = await temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        ).result()

    assert final.status is TenantStatus.ACTIVE
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.last_migration_version == {"backend-service": BACKEND_VERSION}
    (record,) = tenant.migrations
    assert (record.status, record.attempts, record.last_error) == (
        MigrationStatus.SUCCEEDED,
        1,
        None,
    )
    assert {"accounts", "projects"} <= _tables(storage_db_url, f"tenant_{request.id}")


async def _refused_record(
    client: Client, settings: Settings, tenants: TenantRepository, request: TenantSpec
) -> MigrationRecord:
    """Provision `request`, wait for MIGRATION_ERROR, stop the run; the failed record."""
    async with running_worker(client, settings):
        await WorkflowGateway(client, settings).provision(request)
        await eventually(
            lambda: tenants.get(request.id),
            lambda t: t is not None and t.status is TenantStatus.MIGRATION_ERROR,
        )
        handle = client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        await handle.terminate("test done")
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert record.status is MigrationStatus.FAILED
    assert record.attempts == 1, "a 401 must not be retried"
    assert settings.migration_max_attempts > 1
    assert record.last_error is not None
    return record


async def test_a_service_with_another_key_refuses_and_the_tenant_fails_at_once(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    other_key: str,
    storage_db_url: str,
) -> None:
    request = _spec()
    settings = make_settings(("backend-service", other_key))

    record = await _refused_record(temporal_client, settings, tenants, request)

    assert record.last_error == ("HTTP 401: token signature does not verify with the platform key")
    assert _tables(storage_db_url, f"tenant_{request.id}") == set()


async def test_a_service_of_another_name_refuses_the_audience(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    misnamed: str,
    storage_db_url: str,
) -> None:
    request = _spec()
    settings = make_settings(("backend-service", misnamed))

    record = await _refused_record(temporal_client, settings, tenants, request)

    assert record.last_error is not None
    assert record.last_error.startswith("HTTP 401")
    assert record.last_error == "HTTP 401: token audience does not match auth-service"
    assert _tables(storage_db_url, f"tenant_{request.id}") == set()
