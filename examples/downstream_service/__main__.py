"""`python -m examples.downstream_service --name auth-service --port 8102`: serve with uvicorn."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import uvicorn

from examples.downstream_service.app import create_app
from examples.downstream_service.migrator import MigrationSetInvalid, load_migrations
from examples.downstream_service.replies import ReplyKeyInvalid, ReplySigner
from examples.downstream_service.settings import (
    AuthNotConfigured,
    ConsumerNotConfigured,
    DownstreamSettings,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (which wins over `DOWNSTREAM_*`) and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.downstream_service",
        description="Reference downstream service: applies tenant migrations.",
    )
    parser.add_argument("--name", help="service name, e.g. backend-service or auth-service")
    parser.add_argument("--host", help="interface to listen on")
    parser.add_argument("--port", type=int, help="port to listen on")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        field: value
        for field, value in (("service_name", args.name), ("host", args.host), ("port", args.port))
        if value is not None
    }
    settings = DownstreamSettings(**overrides)
    try:
        settings.require_key_source()
        # Read again by the app's start-up; checked here too so that a broken set (a clash
        # with a built-in migration, say) ends the process with one line.
        load_migrations(settings.migrations_path, settings.extra_migrations_dirs)
        reply_key = settings.require_reply_key()
        if reply_key is not None:
            ReplySigner(reply_key, service_name=settings.service_name)
    except (
        AuthNotConfigured,
        ConsumerNotConfigured,
        FileNotFoundError,
        MigrationSetInvalid,
        ReplyKeyInvalid,
    ) as exc:
        # Said plainly before uvicorn starts, rather than as a traceback from the lifespan.
        parser.exit(2, f"{parser.prog}: {exc}\n")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
