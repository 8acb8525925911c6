"""HTTP/1.1 over a bare socket: a request head sent exactly as given, in one write, and the
answer read back with the time it took. For what no well-behaved client sends (a 1 MB URL,
headers past any limit), where the test must control the bytes on the wire."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawAnswer:
    """A response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


def request_head(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    """`METHOD target HTTP/1.1`, a Host header, `headers`, the blank line."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def exchange(port: int, head: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send `head` to 127.0.0.1:`port` in one write and read the answer (its body by
    Content-Length, or up to the close); `seconds` spans connect to the answer's last byte."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(head)
        async with asyncio.timeout(timeout):
            await writer.drain()
            status_line, _, header_block = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            headers = {}
            for line in header_block.decode("latin-1").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
        return RawAnswer(int(status_line.split()[1]), headers, body, time.monotonic() - started)
    finally:
        writer.close()
