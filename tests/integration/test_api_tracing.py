"""One trace from the operator's POST to the downstream service's migrate call: the API's
server span, the workflow start, the workflow and its activities, and the outgoing HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.client import Client

from api.main import create_app
from infra.telemetry.tracing import client_interceptors
from infra.temporal import connect_client
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import token_for
from tests.integration.test_observability import RecordingService
from tests.support.polling import eventually
from tests.support.servers import serve
from worker import build_worker, worker_activities

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def recording() -> Iterator[tuple[RecordingService, str]]:
    service = RecordingService()
    with serve(service.app()) as url:
        yield service, url


async def test_one_trace_spans_api_workflow_activities_and_downstream(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    recording: tuple[RecordingService, str],
) -> None:
    service, url = recording
    settings = make_settings(("backend-service", url))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker_client = await connect_client(settings, interceptors=client_interceptors(provider))
    tenant_id = unique_id("traced")
    headers = {"Authorization": f"Bearer {token_for(keys_dir)}"}
    async with (
        worker_activities(settings, tracer_provider=provider) as activities,
        build_worker(worker_client, settings, activities),
    ):
        with serve(create_app(settings, tracer_provider=provider)) as base:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
                body = {
                    "id": tenant_id,
                    "name": "Traced",
                    "storageMode": "SCHEMA",
                    "slaTier": "BASIC",
                }
                assert (await api.post("/api/tenants", json=body)).status_code == 202
                await eventually(
                    lambda: api.get(f"/api/tenants/{tenant_id}"),
                    lambda r: r.json()["status"] == "ACTIVE",
                )

    spans = exporter.get_finished_spans()
    (post,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /api/tenants"]
    assert post.context is not None
    trace_id = post.context.trace_id
    in_trace = Counter(
        s.name for s in spans if s.context is not None and s.context.trace_id == trace_id
    )
    for expected in (
        "StartWorkflow:ProvisionTenantWorkflow",
        "RunWorkflow:ProvisionTenantWorkflow",
        "RunActivity:claim_tenant",
        "RunActivity:create_storage",
        "RunActivity:migrate_service",
        "POST",
    ):
        assert in_trace[expected] >= 1, f"{expected} not in the POST's trace: {sorted(in_trace)}"
    (traceparent,) = service.traceparents(tenant_id)
    assert traceparent is not None
    assert traceparent.split("-")[1] == f"{trace_id:032x}"
