"""The platform's logging pointed at one stream for a while, and put back afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog
from temporalio import activity, workflow

from infra.telemetry.logging import configure_logging
from tenancy.settings import Settings

_LIBRARIES = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextmanager
def platform_logs_to(stream: TextIO, settings: Settings | None = None) -> Iterator[None]:
    """Route every log line of this process (structlog and stdlib) to `stream`, as
    `configure_logging` does for the real processes; restore the previous set-up on exit.

    Unconfigured, structlog prints to whatever `sys.stdout` is at the moment of the call, so
    code that swaps `sys.stdout` (Typer's CliRunner) would capture the worker's lines too.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in _LIBRARIES
    }
    structlog_config = structlog.get_config()
    on_message = (
        workflow.logger.workflow_info_on_message,
        activity.logger.activity_info_on_message,
    )
    configure_logging(settings or Settings(log_format="console"), stream=stream)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (library_handlers, propagate) in libraries.items():
            logging.getLogger(name).handlers[:] = library_handlers
            logging.getLogger(name).propagate = propagate
        structlog.configure(**structlog_config)
        workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = (
            on_message
        )
