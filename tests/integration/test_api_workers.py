"""`PLATFORM_API_WORKERS=2`: the API served by two uvicorn worker processes (`python -m
api.serve`, as `make dev` and the image start it), whose `/metrics` adds up the requests every
process served, whichever process answers the scrape; and one access line per request."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from bench.rawload import exchange
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.processes import api_serve_process, child_env
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BATCH = 20
SEQUENTIAL = 20
ROUTE = "/api/tenants/{tenant_id}"


def access_lines(log: str, tenant_id: str) -> list[dict[str, object]]:
    """The API's access lines about `tenant_id`."""
    lines = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "platform.api.access" and record.get("tenant_id") == tenant_id:
            lines.append(record)
    return lines


async def test_two_workers_serve_and_their_metrics_add_up(
    temporal_client: Client,
    platform_db_url: str,
    storage_db_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    env = child_env(
        PLATFORM_DATABASE_URL=platform_db_url,
        PLATFORM_STORAGE_DATABASE_URL=storage_db_url,
        PLATFORM_TASK_QUEUE=f"workers-{uuid.uuid4().hex[:8]}",
        PLATFORM_SIGNING_KEY_FILE=str(keys_dir / "platform-signing.pem"),
        PLATFORM_AUTH_PUBLIC_KEY_FILE=str(keys_dir / "idp.pem"),
        PLATFORM_LOG_FORMAT="json",
        PLATFORM_LOG_LEVEL="INFO",
        PLATFORM_API_WORKERS="2",
        TEMPORAL_ADDRESS=str(temporal_client.service_client.config.target_host),
    )
    port = free_port()
    api = api_serve_process(env, port, tmp_path)
    await api.start()
    try:
        tenant_id = f"workers-{uuid.uuid4().hex[:8]}"
        sent = 0
        # New connections, many at once, until both processes have taken some: which process
        # accepts a connection is the kernel's choice.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http:

            async def batch() -> set[object]:
                nonlocal sent
                answers = await asyncio.gather(
                    *(http.get(f"/api/tenants/{tenant_id}") for _ in range(BATCH))
                )
                assert {answer.status_code for answer in answers} == {401}
                sent += BATCH
                return {line["pid"] for line in access_lines(api.output(), tenant_id)}

            await eventually(batch, lambda pids: len(pids) == 2, timeout=30, interval=0)

        async def logged() -> list[dict[str, object]]:
            return access_lines(api.output(), tenant_id)

        # One access line per request, no other.
        lines = await eventually(logged, lambda found: len(found) >= sent, timeout=10)
        assert len(lines) == sent

        for _ in range(6):
            samples = await scrape(f"127.0.0.1:{port}")
            served = value(
                samples, "platform_api_requests_total", route=ROUTE, status="401", method="GET"
            )
            assert served == sent

        # Answers on a kept-alive connection leave at once: a worker's socket comes from
        # uvicorn's supervisor without TCP_NODELAY, and an answer's body then waited for the
        # client's delayed ACK of its head (about 40 ms a request).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            seconds = []
            for _ in range(SEQUENTIAL):
                started = time.perf_counter()
                status, _ = await exchange(reader, writer, request)
                seconds.append(time.perf_counter() - started)
                assert status == 200
        finally:
            writer.close()
        assert statistics.median(seconds) < 0.02, seconds
    finally:
        api.stop()
