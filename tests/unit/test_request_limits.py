"""The request head limits as pure rules and as the app's outermost ASGI layer (the one plain
`uvicorn api.main:app` relies on); the served process is tested in
tests/integration/test_request_limits.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Message

from api.limits import MAX_HEADER_BYTES, MAX_REQUEST_LINE, RequestLimits, head_refusal
from api.main import create_app
from tenancy.settings import Settings


def head(
    line_length: int, header_bytes: int = 0, *, complete: bool = True, eol: str = "\r\n"
) -> bytes:
    """A request head whose line is `line_length` bytes and whose header fields, each line's
    end included, are `header_bytes`."""
    line = "GET /" + "a" * (line_length - len("GET / HTTP/1.1")) + " HTTP/1.1"
    fields = ""
    while len(fields) < header_bytes:
        room = header_bytes - len(fields) - len("X: " + eol)
        fields += "X: " + "v" * min(max(room, 1), 500) + eol
    assert len(line) == line_length
    assert len(fields) == header_bytes
    return (line + eol + fields + (eol if complete else "")).encode()


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
@pytest.mark.parametrize("complete", [True, False])
def test_heads_within_the_limits_pass(eol: str, complete: bool) -> None:
    assert head_refusal(head(40, 100, complete=complete, eol=eol)) is None
    assert (
        head_refusal(head(MAX_REQUEST_LINE, MAX_HEADER_BYTES, complete=complete, eol=eol)) is None
    )
    assert head_refusal(b"GET /healthz HT") is None


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_a_request_line_one_byte_over_is_414(eol: str) -> None:
    refusal = head_refusal(head(MAX_REQUEST_LINE + 1, eol=eol))

    assert refusal is not None
    assert refusal.status == 414
    assert refusal.extensions == {"maxBytes": MAX_REQUEST_LINE}


def test_a_request_line_still_arriving_is_414_once_past_the_limit() -> None:
    assert head_refusal(b"GET /" + b"a" * (MAX_REQUEST_LINE - 5)) is None
    refusal = head_refusal(b"GET /" + b"a" * 1024 * 1024)
    assert refusal is not None
    assert refusal.status == 414


@pytest.mark.parametrize("complete", [True, False])
def test_header_fields_one_byte_over_are_431(complete: bool) -> None:
    refusal = head_refusal(head(40, MAX_HEADER_BYTES + 1, complete=complete))
    if not complete:
        # Still arriving and one byte over: it cannot end within the limit once more comes.
        refusal = refusal or head_refusal(head(40, MAX_HEADER_BYTES + 3, complete=False))

    assert refusal is not None
    assert refusal.status == 431
    assert refusal.extensions == {"maxBytes": MAX_HEADER_BYTES}


def test_a_body_after_the_head_is_not_counted() -> None:
    assert head_refusal(head(40, 100) + b"{" * 1024 * 1024) is None


@pytest.fixture
def client() -> httpx.AsyncClient:
    """The real app without its lifespan: a refusal comes before anything the lifespan builds."""
    transport = httpx.ASGITransport(app=create_app(Settings()), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


async def test_the_app_refuses_a_long_target_itself(client: httpx.AsyncClient) -> None:
    async with client:
        answer = await client.get("/healthz", params={"x": "z" * 20 * 1024})

    assert answer.status_code == 414
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    assert answer.json()["maxBytes"] == MAX_REQUEST_LINE
    assert "instance" not in answer.json()


async def test_the_app_refuses_large_header_fields_itself(client: httpx.AsyncClient) -> None:
    async with client:
        answer = await client.get("/healthz", headers={"Cookie": "c" * (MAX_HEADER_BYTES + 1)})

    assert answer.status_code == 431
    assert answer.json()["maxBytes"] == MAX_HEADER_BYTES


async def test_the_refused_target_is_shortened_in_the_servers_scope() -> None:
    """uvicorn writes its access line from the scope it passed in: the refusal cuts the target
    there, so the line does not carry it."""
    reached: list[Any] = []

    async def app(*args: Any) -> None:
        reached.append(args)

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "DELETE",
        "http_version": "1.1",
        "path": "/api/tenants/acme",
        "raw_path": b"/api/tenants/acme",
        "query_string": b"reason=" + b"z" * 100 * 1024,
        "headers": [(b"host", b"api")],
    }

    await RequestLimits(app)(scope, receive, send)

    assert reached == []
    assert sent[0]["status"] == 414
    assert len(scope["query_string"]) < 100
    assert scope["path"] == "/api/tenants/acme"
