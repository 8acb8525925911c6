"""A TCP forwarder on a loopback port that a test can start late: until it runs, connections
to its port are refused, as they are by a database server that is down."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit, urlunsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class TcpProxy:
    """Forwards `127.0.0.1:port` to `target_host:target_port` while started."""

    def __init__(self, port: int, target_host: str, target_port: int) -> None:
        self.port = port
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        pipes = [
            asyncio.create_task(_pipe(reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes)
        self._tasks.difference_update(pipes)

    async def start(self) -> None:
        """Accept connections on the port from now on."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class ThreadedTcpProxy:
    """A `TcpProxy` run by an event loop of its own thread: it forwards while the test's loop
    is blocked (`tests.support.servers.serve` waits for the server's start-up synchronously)."""

    def __init__(self, port: int, target_host: str, target_port: int) -> None:
        self.port = port
        self._proxy = TcpProxy(port, target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tcp-proxy-{port}", daemon=True
        )
        self._thread.start()

    def start(self) -> None:
        """Accept connections on the port from now on."""
        asyncio.run_coroutine_threadsafe(self._proxy.start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        asyncio.run_coroutine_threadsafe(self._proxy.stop(), self._loop).result(timeout=10)

    def close(self) -> None:
        """Stop forwarding and end the thread."""
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by those of a proxy on `127.0.0.1:port`."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
