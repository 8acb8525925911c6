"""The wrk load generator's result: parsed from its script's line, and a real run against a
real HTTP server counting each status (when `wrk` is installed: `.ci/run` installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import wrkload
from bench.rawload import Target
from tests.support.servers import serve


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


async def _revalidated(request: Request) -> Response:
    fresh = request.headers.get("if-none-match") == '"v1"'
    return Response(status_code=304 if fresh else 200)


@pytest.fixture
def server_port() -> Iterator[int]:
    with serve(Starlette(routes=[Route("/x", _revalidated)])) as url:
        port = urlsplit(url).port
        assert port is not None
        yield port


@pytest.mark.skipif(not wrkload.available(), reason="wrk is not installed")
def test_a_run_counts_every_answer_by_status(server_port: int) -> None:
    target = Target("127.0.0.1", server_port, "/x", {"If-None-Match": '"v1"'})
    outcome = wrkload.run(target, clients=2, duration=1)
    assert outcome.requests > 0
    assert dict(outcome.statuses) == {304: outcome.requests}
    assert outcome.errors == 0
    plain = wrkload.run(Target("127.0.0.1", server_port, "/x"), clients=2, duration=1)
    assert set(plain.statuses) == {200}
