"""A load generator cheap enough not to be what it measures: keep-alive HTTP/1.1 over asyncio
streams, in several processes.

httpx spends more CPU per request than the API's reads do, so on a machine the API shares it
would measure httpx. Here each client writes one prebuilt request (request line and headers as
bytes) and reads the answer's head up to its blank line and then `Content-Length` bytes of body,
nothing more: no header objects, no URL parsing, no pool. Only what the API sends is read
(no chunked encoding, no `Connection: close` handling beyond reconnecting).

`run(...)` starts `processes` processes of `clients // processes` clients each, lets them send
for `duration` seconds, and returns every answer's status and latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Target:
    """One request, sent again and again: host, port, path and extra header fields."""

    host: str
    port: int
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def request_bytes(self) -> bytes:
        """The whole request, ready to write."""
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Outcome:
    """What some clients saw: latency of each answer (seconds) and the count of each status."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0
    # Answers per second of each merged part: processes start a little apart, so their
    # rates add up, not their counts over one duration.
    rates: list[float] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        """Add `other`'s answers (a process running at the same time) to these."""
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.errors += other.errors
        self.seconds = max(self.seconds, other.seconds)
        self.rates.append(other.per_second)

    @property
    def requests(self) -> int:
        """Answers received."""
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        """Answers per second of the run (the sum of its processes' rates)."""
        if self.rates:
            return sum(self.rates)
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The `p`th percentile latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000


def content_length(head: bytes) -> int:
    """The body length a response head declares (0 when it declares none)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def status_of(head: bytes) -> int:
    """The status code of a response head (`HTTP/1.1 200 OK`)."""
    return int(head[9:12])


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send `request` and read one whole answer: its status and body."""
    writer.write(request)
    head = await reader.readuntil(_HEAD_END)
    length = content_length(head)
    body = await reader.readexactly(length) if length else b""
    return status_of(head), body


async def _client(target: Target, request: bytes, until: float, outcome: Outcome) -> None:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while (started := time.perf_counter()) < until:
            try:
                status, _ = await exchange(reader, writer, request)
            except (ConnectionError, asyncio.IncompleteReadError):
                outcome.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(target.host, target.port)
                continue
            outcome.latencies.append(time.perf_counter() - started)
            outcome.statuses[status] += 1
    finally:
        writer.close()


async def _clients(target: Target, clients: int, duration: float) -> Outcome:
    outcome = Outcome()
    request = target.request_bytes()
    began = time.perf_counter()
    until = began + duration
    await asyncio.gather(*(_client(target, request, until, outcome) for _ in range(clients)))
    outcome.seconds = time.perf_counter() - began
    return outcome


def _process(target: Target, clients: int, duration: float) -> Outcome:
    return asyncio.run(_clients(target, clients, duration))


def run(target: Target, *, clients: int, duration: float, processes: int = 2) -> Outcome:
    """`clients` keep-alive clients over `processes` processes, each sending `target` one
    request after another for `duration` seconds; every answer they saw."""
    processes = max(1, min(processes, clients))
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.starmap(_process, [(target, share, duration) for share in shares])
    total = Outcome()
    for part in parts:
        total.merge(part)
    return total
