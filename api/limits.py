"""Limits on a request's head, applied before anything reads it.

    request line (method, target, version)   at most 8 KiB (8,192 bytes)    else 414 URI Too Long
    header fields, every line with its CRLF  at most 16 KiB (16,384 bytes)  else 431

The same limits common servers apply (Apache's LimitRequestLine 8190, nginx's 8k buffers), so a
client that works behind one works here. Two layers apply them:

- `LimitedHttpToolsProtocol` and `LimitedH11Protocol`, uvicorn's httptools and h11 protocols
  with a check on the raw bytes of each request head, pipelined ones included, before the parser
  takes it (`python -m api.serve` serves `--http api.limits:LimitedHttpToolsProtocol --loop
  uvloop`, as `make dev`, the tests and the image start the API). A head over a limit is
  answered at once (after the answers to the requests before it on its connection), even while
  its bytes are still arriving, and no scope, route, log line or span ever sees it.
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
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import PROBLEM_JSON, ApiError, HeaderFieldsTooLarge, UriTooLong

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
# h11 refuses (with a bare 400) an incomplete head past this; ours must be refused first.
_MAX_HEAD = MAX_REQUEST_LINE + MAX_HEADER_BYTES + 8
# Lets a client still sending its oversized head read the answer before the close, which
# would otherwise be a reset that discards it.
LINGER_SECONDS = 2.0
_SHOWN = 64
# The most of a chunked body fed to httptools at once.
_CHUNK = 64 * 1024
# The start of a chunk-size line that is read for the size.
_SIZE_LINE = 64
_HEX_DIGITS = b"0123456789abcdefABCDEF"
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


def head_refusal(buffer: bytes | bytearray) -> ApiError | None:
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


def head_length(buffer: bytes | bytearray) -> int | None:
    """The length of the request head at the start of `buffer`, its blank line included; None
    while it is incomplete. For a head `head_refusal` let pass."""
    blank = _BLANK_LINE.search(buffer, 0, _MAX_HEAD + 4)
    return None if blank is None else blank.end()


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Send each write at once (TCP_NODELAY).

    asyncio sets it only on sockets made with proto IPPROTO_TCP; the one uvicorn's supervisor
    binds for several workers (PLATFORM_API_WORKERS) has proto 0, so an answer's body, written
    after its head, waited for the client's delayed ACK (40 ms).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def refuse(transport: asyncio.Transport, client: tuple[str, int] | None, refusal: ApiError) -> None:
    """Answer `refusal` on `transport`, stop sending and close it after lingering."""
    peer = f"{client[0]}:{client[1]}" if client else "-"
    _log.warning("refused a request head from %s: %s %d", peer, refusal.detail, refusal.status)
    transport.write(refusal_bytes(refusal))
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, refusing a request head over a limit before h11 parses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set TCP_NODELAY, then let uvicorn take the connection."""
        set_nodelay(transport)
        super().connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        """Nothing more is read from a connection whose head was refused."""
        if not self._refused:
            super().data_received(data)

    def handle_events(self) -> None:
        """Check the head waiting in h11's buffer before h11 parses it: on new bytes, and for
        a pipelined head once the answer before it is complete."""
        if self._refused:
            return
        if self.conn.their_state is h11.IDLE:
            buffered, _ = self.conn.trailing_data
            refusal = head_refusal(buffered)
            if refusal is not None:
                self._refused = True
                refuse(self.transport, self.client, refusal)
                return
        super().handle_events()


def _chunk_size(line: bytes | bytearray) -> int | None:
    """The size a chunk-size line (its first `_SIZE_LINE` bytes) gives; None if it is not one
    (httptools refuses it then) or its digits run past them."""
    if b";" not in line and not line.endswith(b"\n"):
        return None
    digits = bytes(line).split(b";", 1)[0].rstrip(b"\r\n")
    if not digits or digits.strip(_HEX_DIGITS):
        return None
    return int(digits, 16)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over a limit before httptools
    parses it.

    httptools parses what it is given at once, several requests included, and does not say
    where one ends, so the bytes are fed in pieces that end where a head or a body does: a
    head once it is complete and within the limits (the bytes of a head still arriving are
    kept, at most the limits' worth, and checked again with each read), a body by its
    Content-Length, a chunked one by its chunk sizes. A refused head behind requests still
    being answered (pipelined) is refused once they are, so the answers keep their order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._deferred: ApiError | None = None
        # The bytes of the request head in progress, from its first byte.
        self._head = bytearray()
        self._reading_head = True
        # Body bytes still to come by Content-Length; None for a chunked body.
        self._body_left: int | None = 0
        # A chunked body: the data and CRLF of its chunk still to come, the start of its
        # chunk-size line so far, the last bytes of its trailer section once there.
        self._chunk_left = 0
        self._size_line = bytearray()
        self._trailers: bytes | None = None
        # The bytes of its trailer section so far: header fields, held to their limit.
        self._trailer_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set TCP_NODELAY, then let uvicorn take the connection."""
        set_nodelay(transport)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Feed httptools each head once checked, each body as far as it goes."""
        if self._refused:
            return
        view = memoryview(data)
        start = 0
        while start < len(data):
            if self._reading_head:
                known = len(self._head)
                self._head += view[start : start + _MAX_HEAD + 8 - known]
                refusal = head_refusal(self._head)
                if refusal is not None:
                    self._refuse(refusal)
                    return
                end = head_length(self._head)
                if end is None:
                    size = len(data) - start
                else:
                    size = end - known
                    # on_headers_complete, called while it is fed, turns to the body.
                    self._head.clear()
            elif self._body_left is None:
                size = self._chunked_piece(data, start)
                if self._trailers is not None and self._trailer_bytes > MAX_HEADER_BYTES + 2:
                    self._refuse(header_fields_too_large())
                    return
            else:
                size = self._body_left or len(data) - start
            super().data_received(view[start : start + size])  # type: ignore[arg-type]
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            start += size

    def _chunked_piece(self, data: bytes, start: int) -> int:
        """How many bytes of `data` from `start` to feed next of a chunked body: a chunk-size
        line up to its end, the chunk's data with its CRLF at once, the trailer section up to
        its blank line (the body's end), noting which comes next."""
        rest = len(data) - start
        if self._chunk_left:
            size = min(self._chunk_left, rest)
            self._chunk_left -= size
            return size
        if self._trailers is not None:
            buffer = self._trailers + data[start : start + _CHUNK]
            blank = _BLANK_LINE.search(buffer)
            fed = blank.end() if blank else len(buffer)
            self._trailers = buffer[fed - 2 : fed]
            size = fed - (len(buffer) - min(rest, _CHUNK))
            self._trailer_bytes += size
            return size
        line_end = data.find(b"\n", start, start + _CHUNK)
        size = line_end + 1 - start if line_end >= 0 else min(rest, _CHUNK)
        self._size_line += data[start : start + min(size, _SIZE_LINE - len(self._size_line))]
        if line_end >= 0:
            chunk = _chunk_size(self._size_line)
            self._size_line.clear()
            if chunk == 0:
                self._trailers = b"\n"
            elif chunk is not None:
                self._chunk_left = chunk + 2
        return size

    def on_header(self, name: bytes, value: bytes) -> None:
        """A field of the head; a trailer field (after the body) is dropped: uvicorn would add
        it to the headers of the request the app already holds."""
        if self._reading_head:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Note how the body ends, then let uvicorn start the request."""
        self._reading_head = False
        self._body_left = 0
        self._chunk_left = 0
        self._size_line.clear()
        self._trailers = None
        self._trailer_bytes = 0
        for name, value in self.headers:
            if name == b"transfer-encoding":
                self._body_left = None
                break
            if name == b"content-length" and value.strip().isdigit():
                self._body_left = int(value)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Count the body's bytes, then pass them on."""
        if self._body_left is not None:
            self._body_left -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The next byte begins a head."""
        self._reading_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Send a refusal held back for the answers before it, once they are all sent."""
        super().on_response_complete()
        if self._deferred is not None and self.cycle.response_complete and not self.pipeline:
            if not self.transport.is_closing():
                self._unset_keepalive_if_required()
                refuse(self.transport, self.client, self._deferred)
            self._deferred = None

    def _refuse(self, refusal: ApiError) -> None:
        self._refused = True
        self._head.clear()
        if self.cycle is None or self.cycle.response_complete:
            self._unset_keepalive_if_required()
            refuse(self.transport, self.client, refusal)
        else:
            self._deferred = refusal


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
