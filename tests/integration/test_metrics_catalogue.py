"""The metrics catalogue (`infra.telemetry.catalogue`) against what the processes really serve:
every recording function of the worker is called on a real SDK runtime's Prometheus endpoint,
one request goes through the API's metrics middleware, and the scrapes must show exactly the
catalogue's names and labels, and nothing `platform_` the catalogue lacks. A MetricDoc without a
recording call here, or a metric recorded that the catalogue lacks, fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from temporalio.common import MetricMeter

from api.metrics import install_metrics
from infra.db.server_checks import SERVER_CAPACITY, SERVER_TENANTS, SERVER_UP, check_servers
from infra.db.servers import ServerRepository
from infra.telemetry import metrics as m
from infra.telemetry.catalogue import METRICS, MetricDoc, by_name
from infra.temporal import worker_runtime
from tenancy.fleet import StorageServer
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.rollouts import RolloutStatus
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.support.metrics import Samples, label_names, parse, scrape
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# The Temporal SDK's Prometheus exporter labels every sample with this (its global attributes).
SDK_LABELS = frozenset({"service_name"})
SPEC = TenantSpec(
    id="catalogue", name="Catalogue", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
)

TENANT_STATUSES = {status: (2, timedelta(seconds=30)) for status in TenantStatus}

Record = Callable[[MetricMeter, ServerRepository], Awaitable[None]]


def _sync(record: Callable[[MetricMeter], object]) -> Record:
    async def call(meter: MetricMeter, _: ServerRepository) -> None:
        record(meter)

    return call


async def _check_servers(meter: MetricMeter, servers: ServerRepository) -> None:
    # Nothing listens there: the check records the server down, and all three gauges.
    gone = StorageServer(
        name="pg-catalogue",
        url=f"postgresql://platform@127.0.0.1:{free_port()}/tenants",
        pool="shared",
        max_tenants=5,
    )
    await check_servers([gone], servers, meter)


# Each worker metric -> a call that records it, as the worker's code does.
WORKER_RECORDERS: dict[str, Record] = {
    m.PROVISIONS_STARTED: _sync(lambda meter: m.provision_started(meter, SPEC)),
    m.PROVISIONS_FINISHED: _sync(
        lambda meter: m.provision_finished(meter, SPEC, m.ProvisionResult.ACTIVE)
    ),
    m.PROVISION_DURATION: _sync(
        lambda meter: m.provision_finished(
            meter, SPEC, m.ProvisionResult.ACTIVE, timedelta(seconds=3)
        )
    ),
    m.MIGRATION_ATTEMPTS: _sync(lambda meter: m.migration_attempt(meter, "svc", "success")),
    m.STORAGE_ERRORS: _sync(lambda meter: m.storage_error(meter, "transient", "57P03")),
    m.DELETIONS_FINISHED: _sync(
        lambda meter: m.deletion_finished(meter, "SCHEMA", m.DeletionResult.DELETED)
    ),
    m.DELETION_DURATION: _sync(
        lambda meter: m.deletion_finished(
            meter, "SCHEMA", m.DeletionResult.DELETED, timedelta(minutes=5)
        )
    ),
    m.ROLLOUT_TENANTS: _sync(lambda meter: m.rollout_tenant_finished(meter, "SUCCEEDED")),
    m.ROLLOUT_DURATION: _sync(
        lambda meter: m.rollout_finished(meter, "SUCCEEDED", timedelta(seconds=40))
    ),
    m.TENANTS: _sync(lambda meter: m.tenant_statuses(meter, TENANT_STATUSES)),
    m.TENANTS_OLDEST: _sync(lambda meter: m.tenant_statuses(meter, TENANT_STATUSES)),
    m.ROLLOUTS: _sync(lambda meter: m.rollout_statuses(meter, dict.fromkeys(RolloutStatus, 1))),
    m.RELAY_LEADER: _sync(lambda meter: m.relay_leader(meter, True)),
    m.OUTBOX_BACKLOG: _sync(lambda meter: m.outbox_backlog(meter, 3, timedelta(seconds=2))),
    m.OUTBOX_OLDEST: _sync(lambda meter: m.outbox_backlog(meter, 3, timedelta(seconds=2))),
    m.EVENTS_PUBLISHED: _sync(lambda meter: m.outbox_published(meter, "tenants")),
    m.COMMAND_REPLIES: _sync(lambda meter: m.command_reply(meter, "svc", "taken")),
    SERVER_UP: _check_servers,
    SERVER_TENANTS: _check_servers,
    SERVER_CAPACITY: _check_servers,
}


def _entries(process: str) -> list[MetricDoc]:
    return [doc for doc in METRICS if doc.process == process]


def _assert_served_as_catalogued(
    samples: Samples, process: str, prefix: str, ignored: frozenset[str]
) -> None:
    served = label_names(samples, prefix, ignored)
    catalogue = by_name()
    for doc in _entries(process):
        for series in doc.series_names():
            assert series in served, f"{series} ({doc.name}) is not served"
            wanted = frozenset(doc.labels) | (
                {"le"} if series.endswith("_bucket") and doc.kind == "histogram" else set()
            )
            assert served[series] == {wanted}, (series, served[series], wanted)
    unlisted = sorted(
        name for name in served if catalogue.get(name) is None or catalogue[name].process != process
    )
    assert unlisted == [], f"served but not in the catalogue: {unlisted}"


async def test_every_worker_metric_of_the_catalogue_has_its_recording_call() -> None:
    assert set(WORKER_RECORDERS) == {doc.name for doc in _entries("worker")}


async def test_the_worker_serves_the_catalogue_s_names_and_labels_and_nothing_else(
    servers: ServerRepository,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime = worker_runtime(Settings(worker_metrics_address=address))
    done: set[Record] = set()
    for record in WORKER_RECORDERS.values():
        if record not in done:
            await record(runtime.metric_meter, servers)
            done.add(record)
    samples = await scrape(address)

    # The SDK's global labels are the only ones no catalogue entry names.
    sdk = {key for (name, labels) in samples if name.startswith("platform_") for key, _ in labels}
    assert sdk >= SDK_LABELS
    _assert_served_as_catalogued(samples, "worker", "platform_", SDK_LABELS)


async def test_the_api_serves_the_catalogue_s_names_and_labels_and_nothing_else() -> None:
    app = FastAPI()

    @app.get("/api/tenants/{tenant_id}")
    async def get_tenant(tenant_id: str) -> dict[str, str]:
        return {"id": tenant_id}

    install_metrics(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        assert (await http.get("/api/tenants/t_one")).status_code == 200
        response = await http.get("/metrics")
    samples = {
        key: sample
        for key, sample in parse(response.text).items()
        # prometheus_client's creation timestamp of each counter and histogram (not served in
        # its multiprocess mode, which several API workers use): no rule reads it.
        if not key[0].endswith("_created")
    }
    _assert_served_as_catalogued(samples, "api", "platform_api_", frozenset())
