"""Metrics, traces and logs of a whole provisioning, with the worker built as `worker.py`
builds it, against real Temporal, PostgreSQL and an HTTP downstream service."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client, WorkflowHandle

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from infra.telemetry.tracing import client_interceptors
from infra.temporal import connect_client, worker_runtime
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.rollouts import RolloutStatus
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.support.logs import platform_logs_to
from tests.support.metrics import Samples, scrape
from tests.support.metrics import value as metric_value
from tests.support.polling import eventually
from tests.support.servers import free_port, serve
from worker import build_worker, worker_activities
from workflows.provision.contracts import ProvisionState
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RecordingService:
    """A downstream service that records each call's `traceparent`; a tenant may be scripted
    to get 503s first, whose detail carelessly echoes the caller's Authorization header."""

    version: str = "0002"
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    echo_failures: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def traceparents(self, tenant_id: str) -> list[str | None]:
        with self._lock:
            return [parent for tenant, parent in self.calls if tenant == tenant_id]

    async def _migrate(self, request: Request) -> JSONResponse:
        tenant_id = request.path_params["tenant_id"]
        with self._lock:
            self.calls.append((tenant_id, request.headers.get("traceparent")))
            failing = self.echo_failures.get(tenant_id, 0)
            self.echo_failures[tenant_id] = max(failing - 1, 0)
        if failing:
            detail = f"overloaded, retry with {request.headers.get('authorization')}"
            return JSONResponse({"detail": detail}, status_code=503)
        return JSONResponse({"version": self.version})

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/internal/tenants/{tenant_id}/migrate", self._migrate, methods=["POST"])]
        )


@pytest.fixture(scope="module")
def downstream() -> Iterator[tuple[RecordingService, str]]:
    service = RecordingService()
    with serve(service.app()) as url:
        yield service, url


def spec(tier: str = "PREMIUM") -> TenantSpec:
    return TenantSpec(
        id=unique_id("obs"), name="Observed", storage_mode=StorageMode.SCHEMA, sla_tier=tier
    )


async def provision(
    client: Client, result_client: Client, settings: Settings, request: TenantSpec
) -> WorkflowHandle[ProvisionTenantWorkflow, ProvisionState]:
    await WorkflowGateway(client, settings).provision(request)
    handle = result_client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    final = await handle.result()
    assert final.status is TenantStatus.ACTIVE
    return handle


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (SDK labels vary); 0 if none."""
    return metric_value(samples, name, **labels) or 0.0


async def test_worker_metrics_endpoint_serves_sdk_and_domain_metrics(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    downstream: tuple[RecordingService, str],
) -> None:
    service, url = downstream
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(("backend-service", url), worker_metrics_address=address)
    runtime = worker_runtime(settings)
    client = await connect_client(settings, runtime=runtime)
    request = spec()
    service.echo_failures[request.id] = 1
    async with (
        worker_activities(
            settings, metric_meter=runtime.metric_meter, gauge_interval=timedelta(milliseconds=100)
        ) as activities,
        build_worker(client, settings, activities),
    ):
        await provision(client, client, settings, request)
        active = (await tenants.count_by_status())[TenantStatus.ACTIVE]
        samples = await eventually(
            lambda: scrape(address),
            lambda s: value(s, "platform_tenants", status="ACTIVE") == active,
        )

    assert any(name.startswith("temporal_") for name, _ in samples)
    assert value(samples, "temporal_workflow_completed", workflow_type="ProvisionTenantWorkflow")
    tenant = {"storage_mode": "SCHEMA", "sla_tier": "PREMIUM"}
    assert value(samples, "platform_provisions_started", **tenant) == 1
    assert value(samples, "platform_provisions_finished", result="ACTIVE", **tenant) == 1
    assert value(samples, "platform_provisions_finished", result="MIGRATION_ERROR") == 0
    attempts = {"service": "backend-service"}
    assert value(samples, "platform_migration_attempts", outcome="retryable", **attempts) == 1
    assert value(samples, "platform_migration_attempts", outcome="success", **attempts) == 1
    assert value(samples, "platform_provision_duration_count", **tenant) == 1
    assert value(samples, "platform_provision_duration_sum", **tenant) > 0
    assert value(samples, "platform_provision_duration_bucket", le="+Inf", **tenant) == 1
    assert value(samples, "platform_tenants", status="ACTIVE") >= 1
    assert {dict(ls)["status"] for n, ls in samples if n == "platform_tenants"} == {
        status.value for status in TenantStatus
    }
    # Refreshed by the same task: every status's longest wait, and the rollouts by status.
    assert {dict(ls)["status"] for n, ls in samples if n == "platform_tenants_oldest_seconds"} == {
        status.value for status in TenantStatus
    }
    assert {dict(ls)["status"] for n, ls in samples if n == "platform_rollouts"} == {
        status.value for status in RolloutStatus
    }
    # No relay runs here (PLATFORM_EVENTS_BACKEND=none), so it has no gauge.
    assert metric_value(samples, "platform_outbox_relay_leader") is None


async def test_one_trace_covers_the_whole_provisioning_and_reaches_the_service(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    downstream: tuple[RecordingService, str],
) -> None:
    service, url = downstream
    settings = make_settings(("backend-service", url))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await connect_client(settings, interceptors=client_interceptors(provider))
    request = spec()
    async with (
        worker_activities(settings, tracer_provider=provider) as activities,
        build_worker(client, settings, activities),
    ):
        # The result is awaited through an untraced client: only the provisioning is traced.
        await provision(client, temporal_client, settings, request)

    spans = exporter.get_finished_spans()
    names = Counter(span.name for span in spans)
    for expected in (
        "StartUpdateWithStartWorkflow:ProvisionTenantWorkflow",
        "RunWorkflow:ProvisionTenantWorkflow",
        "StartActivity:claim_tenant",
        "RunActivity:claim_tenant",
        "RunActivity:create_storage",
        "StartActivity:migrate_service",
        "RunActivity:migrate_service",
    ):
        assert names[expected] >= 1, f"{expected} missing from {sorted(names)}"
    (http_span,) = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST"]
    trace_ids = {span.context.trace_id for span in spans if span.context is not None}
    assert len(trace_ids) == 1, names
    (trace_id,) = trace_ids
    (traceparent,) = service.traceparents(request.id)
    assert traceparent is not None
    _, received_trace, received_parent, _ = traceparent.split("-")
    assert received_trace == f"{trace_id:032x}"
    assert http_span.context is not None
    assert received_parent == f"{http_span.context.span_id:016x}"


@pytest.fixture
def captured_json_logs() -> Iterator[io.StringIO]:
    """Every log line of the test as JSON, in a buffer; logging is put back afterwards."""
    stream = io.StringIO()
    with platform_logs_to(stream, Settings(log_format="json", log_level="DEBUG")):
        yield stream


def with_password(url: str, password: str) -> tuple[str, str]:
    """`url` with a password (trust authentication ignores it), and the password to hunt."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), password


async def test_logs_of_a_full_run_are_structured_and_hold_no_secret(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    downstream: tuple[RecordingService, str],
    platform_db_url: str,
    storage_db_url: str,
    captured_json_logs: io.StringIO,
) -> None:
    service, url = downstream
    database_url, password = with_password(platform_db_url, "S3cretPw")
    storage_url, storage_password = with_password(storage_db_url, "S3cretPw")
    settings = make_settings(
        ("backend-service", url), database_url=database_url, storage_database_url=storage_url
    )
    request = spec()
    # The service's error detail echoes the signed bearer token back to the worker.
    service.echo_failures[request.id] = 1
    async with (
        worker_activities(settings) as activities,
        build_worker(temporal_client, settings, activities),
    ):
        handle = await provision(temporal_client, temporal_client, settings, request)
    run_id = (await handle.describe()).run_id

    text = captured_json_logs.getvalue()
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    for secret in (password, storage_password, "eyJ", "PRIVATE KEY"):
        assert secret not in text
    (resources,) = [line for line in lines if line["event"] == "activity resources"]
    assert "postgres:***@" in resources["database"]

    mine = [line for line in lines if line.get("tenant_id") == request.id]
    ends = {
        (line["activity"], line["outcome"], line["attempt"], line.get("local", False)): line
        for line in mine
        if line["event"] in ("activity completed", "activity failed")
    }
    # The failed call's first attempt is local (in the workflow task); the regular activity
    # that takes it over succeeds at its own first attempt.
    assert set(ends) >= {
        ("claim_tenant", "completed", 1, True),
        ("create_storage", "completed", 1, True),
        ("migrate_service", "retrying", 1, True),
        ("migrate_service", "completed", 1, False),
    }
    for line in ends.values():
        assert line["workflow_id"] == provision_workflow_id(request.id)
        assert line["run_id"] == run_id
        assert isinstance(line["duration_ms"], int)
        assert line["duration_ms"] >= 0
    failed = ends[("migrate_service", "retrying", 1, True)]
    assert failed["service"] == "backend-service"
    assert failed["error_type"] == "MigrationUnavailable"
    assert "overloaded, retry with Bearer ***" in failed["error"]
    # Third-party lines logged during an attempt carry its context too.
    assert any(line["logger"] == "httpx" and line["activity"] == "migrate_service" for line in mine)
    assert any(
        line["logger"] == "temporalio.workflow"
        and line["event"] == f"tenant {request.id} is ACTIVE"
        and line["workflow_id"] == provision_workflow_id(request.id)
        for line in lines
    )
    # The failure reason is kept in history too, which the Web UI shows to anyone.
    history = (await handle.fetch_history()).to_json()
    assert "retry with Bearer ***" in history
    assert not re.search(r"eyJ[\w-]*\.eyJ[\w-]*\.", history)


class ProcessOutput:
    """A process's merged output, collected by a thread so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)

    def close(self) -> None:
        self._thread.join(timeout=10)
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records (span dumps of the console exporter are skipped)."""
        found = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event" in record:
                    found.append(record)
        return found

    async def wait_for(self, event: str, timeout: float = 30) -> None:
        async def records() -> list[dict[str, Any]]:
            return self.records()

        await eventually(
            records, lambda found: any(r["event"] == event for r in found), timeout=timeout
        )


async def test_worker_process_serves_metrics_traces_calls_and_logs_json(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    downstream: tuple[RecordingService, str],
) -> None:
    service, url = downstream
    settings = make_settings(("backend-service", url))
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "TEMPORAL_"))}
    env |= {
        "PLATFORM_EVENTS_BACKEND": "none",
        "PLATFORM_DATABASE_URL": settings.require_database_url(),
        "PLATFORM_STORAGE_DATABASE_URL": settings.require_storage_database_url(),
        "PLATFORM_TASK_QUEUE": settings.task_queue,
        "PLATFORM_DOWNSTREAM_SERVICES": json.dumps([{"name": "backend-service", "baseUrl": url}]),
        "PLATFORM_SIGNING_KEY_FILE": str(settings.require_signing_key_file()),
        "PLATFORM_WORKER_METRICS_ADDRESS": address,
        "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "OTEL_TRACES_EXPORTER": "console",
    }
    proc = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ProcessOutput(proc)
    try:
        await output.wait_for("worker polling task queue")
        request = spec(tier="BASIC")
        # Started through a traced client, as the API will: the worker continues that trace.
        traced = await connect_client(settings, interceptors=client_interceptors(TracerProvider()))
        await provision(traced, temporal_client, settings, request)
        samples = await scrape(address)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output.close()

    tenant = {"storage_mode": "SCHEMA", "sla_tier": "BASIC"}
    assert value(samples, "platform_provisions_finished", result="ACTIVE", **tenant) == 1
    assert value(samples, "platform_migration_attempts", outcome="success") == 1
    assert value(samples, "temporal_workflow_completed") >= 1
    assert {dict(ls)["status"] for n, ls in samples if n == "platform_tenants"}
    (traceparent,) = service.traceparents(request.id)
    assert traceparent is not None
    assert "RunActivity:migrate_service" in "".join(output.lines)
    records = output.records()
    assert any(
        r["event"] == "activity completed" and r.get("tenant_id") == request.id for r in records
    )
    assert records[-1]["event"] == "worker stopped"
