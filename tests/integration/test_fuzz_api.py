"""Schemathesis against the app's own OpenAPI document, authenticated, over real HTTP, with
a real worker process: no 5xx, every response as documented, and no tenant created by a
request the API refused."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from temporalio.client import Client

from api.main import create_app
from tenancy.settings import DownstreamService, Settings
from tests.integration.test_api import token_for
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SUBJECT = "fuzzer"
ACCEPTED: set[str] = set()
REFUSED: set[str] = set()
EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def stack(
    temporal_client: Client, platform_db_url: str, storage_db_url: str, keys_dir: Path
) -> Iterator[tuple[str, Settings]]:
    """API under uvicorn and `python worker.py`, both on this module's task queue."""
    service = ScriptedService()
    with serve(service.app()) as service_url:
        config = Settings(
            database_url=platform_db_url,
            storage_database_url=storage_db_url,
            task_queue=f"fuzz-{uuid.uuid4().hex[:8]}",
            temporal_address=temporal_client.service_client.config.target_host,
            signing_key_file=keys_dir / "platform-signing.pem",
            auth_public_key_file=keys_dir / "idp.pem",
            downstream_services=(DownstreamService(name="backend-service", base_url=service_url),),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "TEMPORAL_"))}
        env |= {
            "PLATFORM_EVENTS_BACKEND": "none",
            "PLATFORM_DATABASE_URL": config.require_database_url(),
            "PLATFORM_STORAGE_DATABASE_URL": config.require_storage_database_url(),
            "PLATFORM_TASK_QUEUE": config.task_queue,
            "PLATFORM_DOWNSTREAM_SERVICES": (
                f'[{{"name": "backend-service", "baseUrl": "{service_url}"}}]'
            ),
            "PLATFORM_SIGNING_KEY_FILE": str(config.require_signing_key_file()),
            "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        }
        worker = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with serve(create_app(config)) as api_url:
                yield api_url, config
        finally:
            worker.terminate()
            worker.wait(30)


@pytest.fixture(scope="module")
def auth_header(keys_dir: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(keys_dir, SUBJECT)}"}


def _record(case: Any, response: Any) -> None:
    if case.method == "POST" and case.path == "/api/tenants":
        sent = case.body.get("id") if isinstance(case.body, dict) else None
        if response.status_code == 202:
            ACCEPTED.add(response.json()["id"])
        elif isinstance(sent, str):
            REFUSED.add(sent)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_answers_as_documented(
    stack: tuple[str, Settings], auth_header: dict[str, str], mode: GenerationMode
) -> None:
    """Valid and invalid requests for every operation, with bounded examples each."""
    api_url, _ = stack
    # Driven through Hypothesis directly: schemathesis' pytest plugin lags pytest 9.
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    exercised = set()
    for result in schema.get_all_operations():
        # The schema is the app's own: an operation it cannot even load is a failure.
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.startswith("/api/admin/"):
            # Its repairs act on every tenant of the shared test databases; it has its own tests.
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            response = case.call(headers=auth_header)
            case.validate_response(response, checks=CHECKS)
            _record(case, response)

        try:
            exercise()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid request to make.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        exercised.add(operation.label)
    assert {"POST /api/tenants", "GET /api/tenants", "GET /api/tenants/{tenant_id}"} <= exercised


def test_only_accepted_requests_created_tenants(
    stack: tuple[str, Settings], storage_db_url: str
) -> None:
    """Runs after the fuzz test (file order): every tenant it created was answered 202, and
    no refused id has a row or storage."""
    _, config = stack
    assert ACCEPTED, "the fuzzer never provisioned a tenant: the test proves nothing"
    assert REFUSED, "the fuzzer never sent a refused create: the test proves nothing"
    with psycopg.connect(config.require_database_url()) as conn:
        created = {
            row[0]
            for row in conn.execute("SELECT id FROM tenants WHERE created_by = %s", (SUBJECT,))
        }
        refused_rows = conn.execute(
            "SELECT id FROM tenants WHERE id = ANY(%s) AND created_by = %s",
            (sorted(REFUSED - ACCEPTED), SUBJECT),
        ).fetchall()
    assert created == ACCEPTED
    assert refused_rows == []
    storage_names = [f"tenant_{tenant_id}" for tenant_id in REFUSED - ACCEPTED]
    with psycopg.connect(storage_db_url) as conn:
        leaked = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(n)s)"
            " UNION SELECT datname FROM pg_database WHERE datname = ANY(%(n)s)",
            {"n": storage_names},
        ).fetchall()
    assert leaked == []
