"""`python -m api.serve`: the API under uvicorn, as `make dev`, the benchmark and the image
start it: uvicorn's httptools protocol with the request head limits
(`api.limits.LimitedHttpToolsProtocol`) on uvloop, in `PLATFORM_API_WORKERS` processes.

With one worker uvicorn serves in this process, exactly as `uvicorn api.main:app` would. With
several, uvicorn's supervisor starts them on one listening socket and the kernel shares the
connections out; each process counts its requests into files of a folder made for this run
(`PROMETHEUS_MULTIPROC_DIR`, prometheus_client's multiprocess mode) and `/metrics`, whichever
process answers it, adds every process's files up. The folder is removed when the API stops,
so no run adds up an earlier run's counts. What else the processes share lives in PostgreSQL
(the console's sign-outs); what each keeps to itself is a cache (verified tokens).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence

import uvicorn

from api.metrics import MULTIPROCESS_DIR_ENV
from tenancy.settings import get_settings

APP = "api.main:app"
# httptools and uvloop cost the API less CPU a request than h11 on asyncio's own loop (issue 22).
HTTP_PROTOCOL = "api.limits:LimitedHttpToolsProtocol"
EVENT_LOOP = "uvloop"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the API until it is stopped."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=settings.api_port, help="port to listen on")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level")
    args = parser.parse_args(argv)
    workers = settings.api_workers

    def serve() -> None:
        uvicorn.run(
            APP,
            host=args.host,
            port=args.port,
            http=HTTP_PROTOCOL,
            loop=EVENT_LOOP,
            log_level=args.log_level,
            workers=workers if workers > 1 else None,
        )

    if workers == 1:
        serve()
        return
    folder = tempfile.mkdtemp(prefix="platform-api-metrics-")
    # Read by prometheus_client when each worker imports it: set before they start.
    os.environ[MULTIPROCESS_DIR_ENV] = folder
    try:
        serve()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
