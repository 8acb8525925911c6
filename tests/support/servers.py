"""Real HTTP servers for tests: any ASGI app under uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, *, timeout: float = 20.0, port: int | None = None) -> Iterator[str]:
    """Serve `app` from a background thread; yields its base URL once it accepts requests.
    `port`: a given one (a server stopped and started again at the same URL), else a free one."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"server on port {port} exited during start-up")
        if time.monotonic() > deadline:
            # Where its start-up hangs (a lock, a connection) is what the failure must show.
            frame = sys._current_frames().get(thread.ident or 0)
            where = "".join(traceback.format_stack(frame)) if frame else "(no frame)\n"
            raise TimeoutError(
                f"server on port {port} did not start in {timeout}s; its thread is at:\n{where}"
            )
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
