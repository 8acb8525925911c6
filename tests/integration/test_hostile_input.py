"""The hostile-input probe of issue 9, replayed against the real API process (`uvicorn
api.main:app`, console logs to a file) with a real worker, PostgreSQL and Temporal.

Each request is one an attacker or a careless client sent. Each test asserts the status, that
nothing changed (no tenant row, no audit event, no workflow on the module's task queue), and
that the API's log holds no raw control character. The schemathesis run next door
(test_fuzz_api.py) checks that every answer here is one the OpenAPI document lists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.auth import READ_SCOPE, WRITE_SCOPE
from devstack.tokens import mint
from infra.security.keys import generate_private_key, load_private_key, public_jwk
from tenancy.naming import provision_workflow_id
from tenancy.settings import DownstreamService, Settings
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.processes import ManagedProcess, api_process, child_env
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MiB = 1024 * 1024
HUGE = 50 * MiB
# Raw C0 controls but the line break, DEL, C1 controls, Unicode line/paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
TITLE_ESCAPE = "/api/tenants/x%1b%5d0;PWNED%07"


@dataclass
class KidRecorder:
    """A downstream service that answers every migrate call and records the token's `kid`."""

    kids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _migrate(self, request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            self.kids.append(str(jwt.get_unverified_header(token).get("kid")))
        return JSONResponse({"version": "1"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/internal/tenants/{tenant_id}/migrate", self._migrate, methods=["POST"])]
        )


@dataclass
class Stack:
    """The API process and what a test needs to look behind it."""

    url: str
    port: int
    api: ManagedProcess
    settings: Settings
    client: Client
    keys_dir: Path
    next_key: Path
    service: KidRecorder

    def token(self, *scopes: str, subject: str = "prober") -> dict[str, str]:
        token = mint(
            self.keys_dir / "idp.pem",
            subject=subject,
            scopes=scopes or (WRITE_SCOPE, READ_SCOPE),
            audience="platform-service",
        )
        return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Footprint:
    """What a request could have changed."""

    tenants: int
    events: int
    workflows: int


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[KidRecorder, str]]:
    service = KidRecorder()
    with serve(service.app()) as url:
        yield service, url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_client: Client,
    platform_db_url: str,
    storage_db_url: str,
    keys_dir: Path,
    recorder: tuple[KidRecorder, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    service, service_url = recorder
    folder = tmp_path_factory.mktemp("hostile")
    next_key = folder / "next-signing.pem"
    generate_private_key(next_key)
    settings = Settings(
        database_url=platform_db_url,
        storage_database_url=storage_db_url,
        task_queue=f"hostile-{uuid.uuid4().hex[:8]}",
        temporal_address=temporal_client.service_client.config.target_host,
        signing_key_file=keys_dir / "platform-signing.pem",
        signing_next_key_files=(next_key,),
        auth_public_key_file=keys_dir / "idp.pem",
        downstream_services=(DownstreamService(name="backend-service", base_url=service_url),),
    )
    env = child_env(
        PLATFORM_DATABASE_URL=platform_db_url,
        PLATFORM_STORAGE_DATABASE_URL=storage_db_url,
        PLATFORM_TASK_QUEUE=settings.task_queue,
        PLATFORM_DOWNSTREAM_SERVICES=json.dumps(
            [{"name": "backend-service", "baseUrl": service_url}]
        ),
        PLATFORM_SIGNING_KEY_FILE=str(keys_dir / "platform-signing.pem"),
        PLATFORM_SIGNING_NEXT_KEY_FILES=json.dumps([str(next_key)]),
        PLATFORM_AUTH_PUBLIC_KEY_FILE=str(keys_dir / "idp.pem"),
        # Console lines are what an operator's terminal shows: the riskier renderer.
        PLATFORM_LOG_FORMAT="console",
        PLATFORM_LOG_LEVEL="INFO",
        TEMPORAL_ADDRESS=str(settings.temporal_address),
    )
    port = free_port()
    api = api_process(env, port, folder)
    async with running_worker(temporal_client, settings):
        await api.start()
        try:
            yield Stack(
                f"http://127.0.0.1:{port}",
                port,
                api,
                settings,
                temporal_client,
                keys_dir,
                next_key,
                service,
            )
        finally:
            api.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        yield client


async def footprint(stack: Stack) -> Footprint:
    with psycopg.connect(stack.settings.require_database_url()) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM tenant_events)"
        ).fetchone()
    assert counts is not None
    listed = await stack.client.count_workflows(f"TaskQueue = '{stack.settings.task_queue}'")
    return Footprint(tenants=counts[0], events=counts[1], workflows=listed.count)


async def assert_never_created(stack: Stack, tenant_id: str) -> None:
    with psycopg.connect(stack.settings.require_database_url()) as conn:
        row = conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    assert row is None, tenant_id
    with pytest.raises(RPCError) as caught:
        await stack.client.get_workflow_handle(provision_workflow_id(tenant_id)).describe()
    assert caught.value.status is RPCStatusCode.NOT_FOUND


async def log_holds(stack: Stack, fragment: str) -> str:
    """The API's log once it holds `fragment` (lines are written after the response)."""

    async def read() -> str:
        return stack.api.output()

    return await eventually(read, lambda text: fragment in text, timeout=10)


def assert_printable_log(stack: Stack) -> None:
    text = stack.api.output()
    found = sorted({f"U+{ord(c):04X}" for c in RAW_CONTROL.findall(text)})
    assert found == [], f"raw control characters in the API log: {found}"


def spec(tenant_id: str) -> dict[str, str]:
    return {"id": tenant_id, "name": "Hostile", "storageMode": "SCHEMA", "slaTier": "BASIC"}


def b64_json(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_a_valid_request_provisions_and_calls_are_signed_with_the_current_key(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """The control: the same stack accepts a well-formed request. The JWKS publishes the next
    key ahead of a rotation, and no call is signed with it."""
    tenant_id = unique_id("hostile_ok")
    created = await http.post("/api/tenants", json=spec(tenant_id), headers=stack.token())
    assert created.status_code == 202, created.text

    async def status() -> str:
        answer = await http.get(f"/api/tenants/{tenant_id}", headers=stack.token())
        return str(answer.json()["status"])

    await eventually(status, lambda s: s == "ACTIVE", timeout=60)
    jwks = (await http.get("/.well-known/jwks.json")).json()
    current = public_jwk(load_private_key(stack.settings.require_signing_key_file()))["kid"]
    upcoming = public_jwk(load_private_key(stack.next_key))["kid"]
    assert [key["kid"] for key in jwks["keys"]] == [current, upcoming]
    assert stack.service.kids
    assert set(stack.service.kids) == {current}
    assert_printable_log(stack)


async def post_huge(
    port: int, *, headers: dict[str, str], chunked: bool, size: int = HUGE
) -> tuple[int, float]:
    """POST an unterminated JSON array of `size` bytes, streamed; the status and how long the
    status line took to arrive after the request head was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = [
        "POST /api/tenants HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        framing,
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    started = time.monotonic()
    piece = b"[" + b"1," * (32 * 1024 - 1) + b"1"

    async def feed() -> None:
        sent = 0
        try:
            while sent < size:
                data = piece[: size - sent]
                writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            # The server may close once it has answered; what it did not read it never held.
            pass

    feeder = asyncio.create_task(feed())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        answered = time.monotonic() - started
        await feeder
    finally:
        feeder.cancel()
        writer.close()
    return int(status_line.split()[1]), answered


def peak_rss(pid: int) -> int:
    """The process's peak resident set size, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


async def test_huge_bodies_are_refused_before_they_are_read_and_memory_stays_flat(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """8 anonymous 50 MB unterminated arrays get 401 at once, a writer's 50 MB gets 413 (by
    Content-Length, and counted while chunked); the API's memory stays flat and /healthz
    answers meanwhile."""
    before = await footprint(stack)
    peak_before = peak_rss(stack.api.pid)
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe_health() -> None:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as health:
            while not done.is_set():
                started = time.monotonic()
                assert (await health.get("/healthz")).status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.1)

    prober = asyncio.create_task(probe_health())

    async def probes_done() -> int:
        return len(latencies)

    await eventually(probes_done, lambda count: count > 0)
    writer = stack.token()
    answers = await asyncio.gather(
        *(post_huge(stack.port, headers={}, chunked=n % 2 == 1) for n in range(8)),
        post_huge(stack.port, headers=writer, chunked=False),
        post_huge(stack.port, headers=writer, chunked=True),
    )
    done.set()
    await prober

    assert [status for status, _ in answers] == [401] * 8 + [413] * 2
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 5, f"an answer took {slowest:.1f}s: the body was read first"
    growth = peak_rss(stack.api.pid) - peak_before
    assert growth < 64 * MiB, f"the API's peak memory grew by {growth / MiB:.0f} MiB"
    assert max(latencies) < 2, f"/healthz took {max(latencies):.1f}s during the upload"
    assert await footprint(stack) == before
    assert_printable_log(stack)


@dataclass(frozen=True)
class Probe:
    """One hostile request and the answer it must get."""

    method: str
    path: str
    status: int
    who: str = "anonymous"
    content: bytes | None = None
    content_type: str | None = "application/json"
    params: dict[str, str] = field(default_factory=dict)


BODY_ID = "hostile_body_id"
VALID = json.dumps(spec(BODY_ID)).encode()
INVALID_JSON = b'{"id": "hostile_body_id", "name": }'
PROBES = {
    "anonymous-invalid-json": Probe("POST", "/api/tenants", 401, content=INVALID_JSON),
    "anonymous-text-plain": Probe(
        "POST", "/api/tenants", 401, content=VALID, content_type="text/plain"
    ),
    "reader-invalid-json": Probe("POST", "/api/tenants", 403, "reader", INVALID_JSON),
    "reader-invalid-fields": Probe("POST", "/api/tenants", 403, "reader", b'{"id": 1}'),
    "reader-text-plain": Probe("POST", "/api/tenants", 403, "reader", b"x", "text/plain"),
    "writer-invalid-json": Probe("POST", "/api/tenants", 400, "writer", INVALID_JSON),
    "writer-text-plain": Probe("POST", "/api/tenants", 415, "writer", VALID, "text/plain"),
    "writer-form": Probe(
        "POST",
        "/api/tenants",
        415,
        "writer",
        b"id=hostile_body_id&name=x",
        "application/x-www-form-urlencoded",
    ),
    "writer-no-content-type": Probe("POST", "/api/tenants", 415, "writer", VALID, None),
    "writer-just-over-the-limit": Probe(
        "POST", "/api/tenants", 413, "writer", b'{"id": "' + b"a" * (64 * 1024) + b'"}'
    ),
    "anonymous-title-escape": Probe("GET", TITLE_ESCAPE, 401),
    "reader-title-escape": Probe("GET", TITLE_ESCAPE, 422, "reader"),
    "anonymous-nul": Probe("GET", "/api/tenants/acme%00", 401),
    "reader-nul": Probe("GET", "/api/tenants/acme%00/events", 422, "reader"),
    "nul-subject": Probe("POST", "/api/tenants", 401, "nul-subject", VALID),
    "escape-subject": Probe("GET", "/api/tenants", 401, "escape-subject"),
    "long-subject": Probe("POST", "/api/tenants", 401, "long-subject", VALID),
    "reader-repair-by-get": Probe("GET", "/api/admin/reconciliation", 403, "reader"),
    "writer-repair-by-get": Probe(
        "GET", "/api/admin/reconciliation", 422, "writer", params={"repair": "true"}
    ),
}
CURSORS = {
    "nul-in-id": b64_json(["1970-01-01T00:00:00+00:00", "a\u0000b"]),
    "nul-in-id-new-format": b64_json([1, "1970-01-01T00:00:00+00:00", "a\u0000b"]),
    "id-not-a-tenant-id": b64_json([1, "1970-01-01T00:00:00+00:00", "NOT AN ID"]),
    "naive-time": b64_json([1, "1970-01-01T00:00:00", "acme"]),
    "xid-as-text": b64_json(["1", "1970-01-01T00:00:00+00:00", "acme"]),
    "xid-beyond-xid8": b64_json([2**64, "1970-01-01T00:00:00+00:00", "acme"]),
    "negative-xid": b64_json([-5, "1970-01-01T00:00:00+00:00", "acme"]),
    "time-as-number": b64_json([1, 0, "acme"]),
    "object": b64_json({"a": 1, "b": 2, "c": 3}),
}
SUBJECTS = {
    "nul-subject": "a\x00b",
    "escape-subject": "x\x1b]0;PWNED\x07",
    "long-subject": "a" * 201,
}


def headers_for(stack: Stack, probe: Probe) -> dict[str, str]:
    headers = {"Content-Type": probe.content_type} if probe.content_type else {}
    if probe.who == "reader":
        headers |= stack.token(READ_SCOPE)
    elif probe.who == "writer":
        headers |= stack.token(WRITE_SCOPE, READ_SCOPE)
    elif probe.who in SUBJECTS:
        headers |= stack.token(subject=SUBJECTS[probe.who])
    return headers


@pytest.mark.parametrize("name", list(PROBES))
async def test_hostile_request_is_refused_and_changes_nothing(
    stack: Stack, http: httpx.AsyncClient, name: str
) -> None:
    probe = PROBES[name]
    before = await footprint(stack)

    answer = await http.request(
        probe.method,
        probe.path,
        content=probe.content,
        params=probe.params,
        headers=headers_for(stack, probe),
    )

    assert answer.status_code == probe.status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == probe.status
    assert await footprint(stack) == before
    await assert_never_created(stack, BODY_ID)
    assert_printable_log(stack)


async def test_unparseable_json_names_the_byte_and_no_field(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    answer = await http.post(
        "/api/tenants",
        content=INVALID_JSON,
        headers=stack.token() | {"Content-Type": "application/json"},
    )

    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(INVALID_JSON)
    problem = answer.json()
    assert answer.status_code == 400
    assert problem["position"] == expected.value.pos
    assert f"at byte {expected.value.pos}" in problem["detail"]
    assert "errors" not in problem


async def test_oversized_body_says_the_limit(stack: Stack, http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/api/tenants",
        content=b" " * (64 * 1024 + 1),
        headers=stack.token() | {"Content-Type": "application/json"},
    )

    assert answer.status_code == 413
    assert answer.json()["maxBytes"] == 64 * 1024


async def test_the_get_repair_problem_says_to_post(stack: Stack, http: httpx.AsyncClient) -> None:
    answer = await http.get(
        "/api/admin/reconciliation", params={"repair": "true"}, headers=stack.token()
    )

    assert answer.status_code == 422
    assert "POST /api/admin/reconciliation" in answer.json()["detail"]


@pytest.mark.parametrize("name", list(CURSORS))
async def test_a_cursor_that_is_no_position_is_422_naming_cursor(
    stack: Stack, http: httpx.AsyncClient, name: str
) -> None:
    before = await footprint(stack)

    answer = await http.get(
        "/api/tenants", params={"cursor": CURSORS[name]}, headers=stack.token(READ_SCOPE)
    )

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["cursor"]
    assert await footprint(stack) == before
    assert_printable_log(stack)


async def test_control_characters_reach_the_log_only_escaped(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """The terminal-title escape and the NUL of the probe are in the log, as escapes."""
    assert (await http.get(TITLE_ESCAPE)).status_code == 401
    assert (await http.get("/api/tenants/acme%00")).status_code == 401

    await log_holds(stack, "x\\x1b]0;PWNED\\x07")
    await log_holds(stack, "acme\\x00")
    assert_printable_log(stack)
