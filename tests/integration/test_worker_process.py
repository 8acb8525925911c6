"""`python worker.py` as operators run it: starts, registers, works, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
REPO = Path(__file__).resolve().parents[2]


class Output:
    """Collects a process's merged output from a thread, for waiting on a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def close(self) -> None:
        """After the process exited: let the reader drain, then close the pipe."""
        self._thread.join(timeout=10)
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen in {timeout}s:\n{''.join(self.lines)}")
            time.sleep(0.05)


async def test_worker_process_provisions_and_stops_cleanly_on_sigterm(
    temporal_client: Client, make_settings: Callable[..., Settings]
) -> None:
    service = ScriptedService()
    with serve(service.app()) as url:
        settings = make_settings(("backend-service", url))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "TEMPORAL_"))}
        env |= {
            "PLATFORM_EVENTS_BACKEND": "none",
            "PLATFORM_DATABASE_URL": settings.require_database_url(),
            "PLATFORM_STORAGE_DATABASE_URL": settings.require_storage_database_url(),
            "PLATFORM_TASK_QUEUE": settings.task_queue,
            "PLATFORM_DOWNSTREAM_SERVICES": f'[{{"name": "backend-service", "baseUrl": "{url}"}}]',
            "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
            "PLATFORM_SIGNING_KEY_FILE": str(settings.require_signing_key_file()),
        }
        proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = Output(proc)
        try:
            output.wait_for("worker polling task queue", timeout=30)
            tenant_id = unique_id("proc")
            await WorkflowGateway(temporal_client, settings).provision(
                TenantSpec(
                    id=tenant_id, name="Proc", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
                )
            )
            handle = temporal_client.get_workflow_handle_for(
                ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
            )
            assert (await handle.result()).status is TenantStatus.ACTIVE

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            output.wait_for("worker stopped", timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.close()
