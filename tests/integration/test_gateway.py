"""What the gateway answers when a start is not confirmed. `provision` (waiting for the run's
record): 503 "accepted" only when Temporal confirmed the start, another 503 (and nothing started)
when it did not. `create` (the POST: a start, then the API's own insert): a start whose answer
was lost is looked up, recorded when it ran, and a 503 says whether to send the request again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ServiceUnavailable
from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.temporal_faults import LostStarts, UnansweredStarts, client_with

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec() -> TenantSpec:
    return TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a Temporal frontend that hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


async def test_accepted_start_without_a_record_answers_503_accepted(
    temporal_client: Client, make_settings: Callable[..., Settings]
) -> None:
    # No worker polls this task queue: Temporal accepts the start, nobody writes the row.
    settings = make_settings(create_timeout=timedelta(seconds=2))
    request = spec()

    with pytest.raises(ServiceUnavailable, match="accepted by Temporal") as answer:
        await WorkflowGateway(temporal_client, settings).provision(request)

    handle = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    assert "GET the tenant later" in answer.value.detail
    await handle.terminate("test done")


async def test_unconfirmed_start_answers_503_and_starts_nothing(
    temporal_client: Client, make_settings: Callable[..., Settings], silent_server: str
) -> None:
    settings = make_settings(create_timeout=timedelta(seconds=1))
    hanging = await Client.connect(silent_server, data_converter=pydantic_data_converter, lazy=True)
    request = spec()

    with pytest.raises(ServiceUnavailable, match="did not confirm") as answer:
        await WorkflowGateway(hanging, settings).provision(request)

    assert "send the request again" in answer.value.detail
    started = [
        e
        async for e in temporal_client.list_workflows(
            f"WorkflowId = '{provision_workflow_id(request.id)}'"
        )
    ]
    assert started == []


async def test_a_create_whose_start_answer_was_lost_records_the_run_it_started(
    temporal_client: Client, make_settings: Callable[..., Settings], tenants: TenantRepository
) -> None:
    lost = LostStarts(reach_server=True)
    gateway = WorkflowGateway(client_with(temporal_client, lost), make_settings())
    request = spec()

    tenant = await gateway.create(request, tenants, requested_by="lost-answer")

    handle = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
    latest = await handle.describe()
    await handle.terminate("test done")
    assert lost.starts == 1
    assert tenant.workflow_run_id == latest.run_id
    assert tenant.created_by == "lost-answer"
    assert await tenants.get(request.id) == tenant


@pytest.mark.parametrize(
    ("refusal", "answer"),
    [
        # The server refused the start: no run can appear, the request may be sent again.
        (RPCStatusCode.RESOURCE_EXHAUSTED, "did not start the provisioning"),
        # The server may still be committing it: Temporal cannot tell yet.
        (RPCStatusCode.UNAVAILABLE, "Temporal is unavailable"),
    ],
)
async def test_a_create_whose_start_did_not_reach_temporal_answers_503_and_writes_nothing(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    refusal: RPCStatusCode,
    answer: str,
) -> None:
    lost = LostStarts(reach_server=False, status=refusal)
    gateway = WorkflowGateway(client_with(temporal_client, lost), make_settings())
    request = spec()

    with pytest.raises(ServiceUnavailable, match=answer) as refused:
        await gateway.create(request, tenants)

    assert lost.starts == 1
    assert await tenants.get(request.id) is None
    with pytest.raises(RPCError) as described:
        await temporal_client.get_workflow_handle(provision_workflow_id(request.id)).describe()
    assert described.value.status is RPCStatusCode.NOT_FOUND
    if refusal is RPCStatusCode.RESOURCE_EXHAUSTED:
        assert refused.value.detail.endswith("send the request again")


async def test_a_create_given_up_on_answers_503_unconfirmed_and_writes_nothing(
    temporal_client: Client, make_settings: Callable[..., Settings], tenants: TenantRepository
) -> None:
    settings = make_settings(create_timeout=timedelta(milliseconds=300))
    gateway = WorkflowGateway(client_with(temporal_client, UnansweredStarts()), settings)
    request = spec()

    with pytest.raises(ServiceUnavailable, match="did not confirm") as refused:
        await gateway.create(request, tenants)

    assert "send the request again" in refused.value.detail
    assert await tenants.get(request.id) is None
