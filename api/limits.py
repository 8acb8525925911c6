"""Limits on a request's head, applied before anything reads it.

    request line (method, target, version)   at most 8 KiB (8,192 bytes)    else 414 URI Too Long
    header fields, every line with its CRLF  at most 16 KiB (16,384 bytes)  else 431

The same limits common servers apply (Apache's LimitRequestLine 8190, nginx's 8k buffers), so a
client that works behind one works here. Two layers apply them:

- `LimitedH11Protocol`, uvicorn's h11 protocol with a check on the raw bytes of each request head
  before h11 parses it (`uvicorn api.main:app --http api.limits:LimitedH11Protocol`, as `make
  dev`, the tests and the image start the API). A head over a limit is answered at once, even
  while its bytes are still arriving, and no scope, route, log line or span ever sees it.
- `RequestLimits`, the outermost ASGI middleware of the app, for any other server (plain
  `uvicorn api.main:app`, whose h11 buffers a head that arrives in one read whatever its size).
  It answers before routing, auth or metrics, and shortens the target in the scope it was given,
  so the server's own access line does not carry a megabyte URL.

Refusals are `application/problem+json` with `maxBytes`, and close the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from typing import Any

import h11
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import PROBLEM_JSON, ApiError, HeaderFieldsTooLarge, UriTooLong

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
# h11 refuses (with a bare 400) an incomplete head past this; ours must be refused first.
_MAX_HEAD = MAX_REQUEST_LINE + MAX_HEADER_BYTES + 8
# Lets a client still sending its oversized head read the answer before the close, which
# would otherwise be a reset that discards it.
LINGER_SECONDS = 2.0
_SHOWN = 64
_BLANK_LINE = re.compile(rb"\n\r?\n")
_log = logging.getLogger("platform.api.limits")


def uri_too_long() -> ApiError:
    """The 414 problem."""
    return UriTooLong(
        f"the request line exceeds {MAX_REQUEST_LINE} bytes", maxBytes=MAX_REQUEST_LINE
    )


def header_fields_too_large() -> ApiError:
    """The 431 problem."""
    return HeaderFieldsTooLarge(
        f"the header fields exceed {MAX_HEADER_BYTES} bytes", maxBytes=MAX_HEADER_BYTES
    )


def head_refusal(buffer: bytes) -> ApiError | None:
    """The limit the request head at the start of `buffer` breaks, if any; None while it keeps
    within them, complete or not. Reads at most the limits' worth of `buffer`."""
    line_end = buffer.find(b"\n", 0, MAX_REQUEST_LINE + 2)
    if line_end < 0:
        return uri_too_long() if len(buffer) > MAX_REQUEST_LINE + 1 else None
    line = line_end - (1 if buffer[line_end - 1 : line_end] == b"\r" else 0)
    if line > MAX_REQUEST_LINE:
        return uri_too_long()
    blank = _BLANK_LINE.search(buffer, line_end, line_end + MAX_HEADER_BYTES + 3)
    if blank is None:
        too_long = len(buffer) - line_end - 1 > MAX_HEADER_BYTES + 2
        return header_fields_too_large() if too_long else None
    return header_fields_too_large() if blank.start() - line_end > MAX_HEADER_BYTES else None


def refusal_bytes(error: ApiError) -> bytes:
    """The whole HTTP/1.1 response for `error`, closing the connection."""
    body = json.dumps(error.problem(None)).encode()
    head = (
        f"HTTP/1.1 {error.status} {error.title}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, refusing a request head over a limit before h11 parses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send each write at once (TCP_NODELAY), then let uvicorn take the connection.

        asyncio sets it only on sockets made with proto IPPROTO_TCP; the one uvicorn's
        supervisor binds for several workers (PLATFORM_API_WORKERS) has proto 0, so an
        answer's body, written after its head, waited for the client's delayed ACK (40 ms).
        """
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        """Check the head waiting in h11's buffer, then let uvicorn handle the events."""
        if self._refused:
            return
        if self.conn.their_state is not h11.IDLE:
            super().data_received(data)
            return
        self._unset_keepalive_if_required()
        self.conn.receive_data(data)
        buffered, _ = self.conn.trailing_data
        refusal = head_refusal(buffered)
        if refusal is None:
            self.handle_events()
            return
        self._refused = True
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        _log.warning(
            "refused a request head from %s: %s %d", client, refusal.detail, refusal.status
        )
        self.transport.write(refusal_bytes(refusal))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


def _head_sizes(scope: Scope) -> tuple[int, int]:
    target = len(scope.get("raw_path") or scope["path"].encode())
    if scope.get("query_string"):
        target += 1 + len(scope["query_string"])
    line = len(scope["method"]) + 1 + target + len(" HTTP/") + len(scope.get("http_version", ""))
    headers = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
    return line, headers


def _shorten(scope: Scope) -> None:
    # Deliberately the server's own dict: its access line is written from it afterwards.
    if len(scope["path"]) > _SHOWN:
        scope["path"] = scope["path"][:_SHOWN] + "..."
        scope["raw_path"] = scope["path"].encode("utf-8", "replace")
    if len(scope.get("query_string", b"")) > _SHOWN:
        scope["query_string"] = scope["query_string"][:_SHOWN] + b"..."


class RequestLimits:
    """Pure ASGI middleware: 414 or 431 for a request head over a limit, before the app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an HTTP request whose head is over a limit; pass anything else on."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        line, headers = _head_sizes(scope)
        refusal = (
            uri_too_long()
            if line > MAX_REQUEST_LINE
            else header_fields_too_large()
            if headers > MAX_HEADER_BYTES
            else None
        )
        if refusal is None:
            await self._app(scope, receive, send)
            return
        _shorten(scope)
        body = json.dumps(refusal.problem(None)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_request_limits(app: FastAPI) -> None:
    """Make `RequestLimits` the outermost layer of `app`, outside its middleware, error
    handlers and tracing; call last in `create_app()`."""
    build = app.build_middleware_stack

    def build_with_limits() -> ASGIApp:
        return RequestLimits(build())

    app.build_middleware_stack = build_with_limits  # type: ignore[method-assign]
