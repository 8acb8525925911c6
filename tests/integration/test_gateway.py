"""What a POST answers when the tenant's record does not come in time: 503 "accepted" only when
Temporal confirmed the start, another 503 (and nothing started) when it did not."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter

from api.errors import ServiceUnavailable
from api.gateway import WorkflowGateway
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tests.conftest import unique_id

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
