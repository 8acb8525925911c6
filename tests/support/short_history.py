"""A Temporal dev server of its own that suggests continue-as-new after a few dozen events, not
thousands, and two scripted services: what the continue-as-new tests of each workflow run on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.temporal import cli_path
from infra.temporal import ensure_search_attributes
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

SUGGEST_AFTER_EVENTS = 60


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short_history_client() -> AsyncIterator[Client]:
    """A Temporal dev server of its own that suggests continue-as-new early."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(cli_path()),
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER_EVENTS}",
        ],
    )
    try:
        await ensure_search_attributes(env.client)
        yield env.client
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[ScriptedService, ScriptedService, str, str]]:
    """backend and auth scripted services, with their URLs."""
    backend, auth = ScriptedService(version="backend-0002"), ScriptedService(version="auth-0002")
    with serve(backend.app()) as backend_url, serve(auth.app()) as auth_url:
        yield backend, auth, backend_url, auth_url
