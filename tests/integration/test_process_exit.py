"""A short-lived command that used a Temporal client exits with its own code.

The SDK's native runtime can crash a finishing interpreter (SIGSEGV or SIGABRT in about one
run of 13 here), which made `python -m reconciliation` exit -11 instead of 1 now and then:
the flaky test of issue 9. The commands end through `infra.temporal.exit_process`; this runs
such a command many times, so that the crash, if it came back, would show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
REPO = Path(__file__).resolve().parents[2]
RUNS = 30
COMMAND = """
import asyncio, sys
from temporalio.client import Client
from infra.temporal import exit_process

async def main() -> None:
    client = await Client.connect(sys.argv[1])
    await client.service_client.check_health()

asyncio.run(main())
exit_process(3)
"""


async def test_a_client_command_always_exits_with_its_own_code(temporal_client: Client) -> None:
    address = temporal_client.service_client.config.target_host
    codes = [
        subprocess.run(
            [sys.executable, "-c", COMMAND, address],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        for _ in range(RUNS)
    ]

    assert codes == [3] * RUNS
