"""The wrk load generator's result: parsed from its script's line, and a real run against a
real HTTP server counting each status (when `wrk` is installed: `.ci/run` installs it)."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator

import pytest

from bench import wrkload
from bench.rawload import Target


def test_the_result_line_is_parsed_into_an_outcome() -> None:
    output = (
        "Running 1s test @ http://127.0.0.1:1/x\n"
        'WRK-RESULT {"requests": 2000, "duration_us": 1000000, "errors": 3, "p50_us": 1500, '
        '"p99_us": 9000, "statuses": {"304": 1990, "200": 10}}\n'
    )
    outcome = wrkload.parse(output)
    assert outcome.requests == 2000
    assert outcome.per_second == 2000
    assert outcome.errors == 3
    assert dict(outcome.statuses) == {304: 1990, 200: 10}
    assert (outcome.percentile(50), outcome.percentile(99)) == (1.5, 9.0)
    with pytest.raises(ValueError, match="printed no result"):
        wrkload.parse("Running 1s test\n")


class _Revalidated(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        fresh = self.headers.get("If-None-Match") == '"v1"'
        self.send_response(304 if fresh else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Revalidated)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not wrkload.available(), reason="wrk is not installed")
def test_a_run_counts_every_answer_by_status(server_port: int) -> None:
    target = Target("127.0.0.1", server_port, "/x", {"If-None-Match": '"v1"'})
    outcome = wrkload.run(target, clients=2, duration=1)
    assert outcome.requests > 0
    assert dict(outcome.statuses) == {304: outcome.requests}
    assert outcome.errors == 0
    plain = wrkload.run(Target("127.0.0.1", server_port, "/x"), clients=2, duration=1)
    assert set(plain.statuses) == {200}
