"""`platformctl` against the real stack: the API under uvicorn with a real worker, PostgreSQL and
Temporal, and real downstream HTTP services (scripted, so a test can make one refuse).

Most runs go through Typer's CliRunner in this process, from a thread, so the event loop that
runs the worker keeps going; the console script itself runs as a subprocess where what matters
is the real process: plain output without a terminal, and the confirmation on a terminal.
Every tenant id and service name is this module's own (the database is shared).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from typer.testing import CliRunner, Result

from api.auth import (
    DELETE_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    WRITE_SCOPE,
)
from api.main import create_app
from cli.main import app
from devstack.tokens import mint
from tenancy.settings import DownstreamService, Settings
from tests.conftest import running_worker, unique_id
from tests.support.logs import platform_logs_to
from tests.support.polling import eventually
from tests.support.processes import child_env
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

OPERATOR_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)
READ_ONLY_SCOPES = (READ_SCOPE, ROLLOUTS_READ_SCOPE)
# Any escape sequence (colour, cursor movement) or a carriage return (a redrawn line).
TERMINAL_CONTROL = re.compile(r"[\x1b\r]")
# Rich obeys these over its own terminal detection; the runs here must see no terminal.
RICH_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
CONSOLE_SCRIPT = Path(sys.executable).parent / "platformctl"
GATE_VERSION = "gate_0002"
# What `tenants create` shows first: the API answers with the tenant's row once the workflow has
# recorded it, and a worker quicker than the API's read (under load) has it MIGRATING already.
ACCEPTED = re.compile(r"(PROVISIONING|MIGRATING)\b")

runner = CliRunner()


@dataclass
class Stack:
    """The API of this module, its two services and the tokens of its callers."""

    url: str
    service: ScriptedService
    service_name: str
    gate_name: str
    operator: str
    reader: str

    async def cli(self, *args: str, token: str | None = None, url: str | None = None) -> Result:
        """Run `platformctl args` in this process (from a thread), as the operator unless
        another token is given."""
        env: dict[str, str | None] = {
            "PLATFORM_URL": url or self.url,
            "PLATFORM_TOKEN": token if token is not None else self.operator,
        } | dict.fromkeys(RICH_OVERRIDES)
        return await asyncio.to_thread(
            runner.invoke, app, list(args), env=env, catch_exceptions=False
        )

    async def json(self, *args: str) -> Any:
        """Run a command with `--output json`; it must succeed and print one JSON document."""
        result = await self.cli(*args, "--output", "json")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    async def provision(self, tier: str = "PREMIUM", prefix: str = "cli") -> str:
        """A new ACTIVE tenant of this module, made with `tenants create --wait`."""
        tenant_id = unique_id(prefix)
        tenant = await self.json(
            "tenants", "create", tenant_id, "--name", "Acme", "--mode", "SCHEMA",
            "--tier", tier, "--wait",
        )  # fmt: skip
        assert tenant["status"] == "ACTIVE", tenant
        return tenant_id

    def env(self) -> dict[str, str]:
        """The environment of a console-script subprocess."""
        env = child_env(PLATFORM_URL=self.url, PLATFORM_TOKEN=self.operator)
        return {k: v for k, v in env.items() if k not in RICH_OVERRIDES}


def token(keys_dir: Path, subject: str, *scopes: str) -> str:
    return mint(keys_dir / "idp.pem", subject=subject, scopes=scopes, audience="platform-service")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_client: Client, platform_role_urls: tuple[str, str], keys_dir: Path
) -> AsyncIterator[Stack]:
    """One API, worker and pair of services for the whole module."""
    service, gate = ScriptedService(version="v1"), ScriptedService(version=GATE_VERSION)
    suffix = uuid.uuid4().hex[:8]
    service_name, gate_name = f"cli-svc-{suffix}", f"cli-gate-{suffix}"
    with serve(service.app()) as service_url, serve(gate.app()) as gate_url:
        settings = Settings(
            database_url=platform_role_urls[0],
            storage_database_url=platform_role_urls[1],
            task_queue=f"cli-{suffix}",
            temporal_address=temporal_client.service_client.config.target_host,
            signing_key_file=keys_dir / "platform-signing.pem",
            auth_public_key_file=keys_dir / "idp.pem",
            downstream_services=(
                DownstreamService(name=service_name, base_url=service_url),
                DownstreamService(name=gate_name, base_url=gate_url),
            ),
            migration_max_attempts=2,
            migration_initial_interval=timedelta(milliseconds=50),
            migration_timeout=timedelta(seconds=5),
            events_backend="none",
        )
        # The worker's and the API's lines go to the real stderr, not into CliRunner's stdout.
        assert sys.__stderr__ is not None
        with platform_logs_to(sys.__stderr__):
            async with running_worker(temporal_client, settings):
                with serve(create_app(settings)) as url:
                    yield Stack(
                        url=url,
                        service=service,
                        service_name=service_name,
                        gate_name=gate_name,
                        operator=token(keys_dir, "operator", *OPERATOR_SCOPES),
                        reader=token(keys_dir, "viewer", *READ_ONLY_SCOPES),
                    )


def plain_lines(text: str) -> list[str]:
    """The lines of `text`, which must hold no terminal control at all."""
    assert not TERMINAL_CONTROL.search(text), repr(text)
    return text.splitlines()


async def test_create_wait_follows_the_tenant_to_active_line_by_line(stack: Stack) -> None:
    tenant_id = unique_id("cli")
    result = await stack.cli(
        "tenants", "create", tenant_id, "--name", "Acme Corp", "--mode", "DATABASE",
        "--tier", "premium", "--wait", "--output", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    tenant = json.loads(result.stdout)
    assert (tenant["id"], tenant["status"], tenant["storageMode"]) == (
        tenant_id,
        "ACTIVE",
        "DATABASE",
    )
    assert tenant["createdBy"] == "operator"
    assert {m["service"]: m["version"] for m in tenant["migrations"]} == {
        stack.service_name: "v1",
        stack.gate_name: GATE_VERSION,
    }
    # Without a terminal: one line per change, no redraw, the last one ACTIVE.
    progress = plain_lines(result.stderr)
    assert ACCEPTED.match(progress[0].removeprefix(f"{tenant_id}: ")), progress
    assert progress[-1].startswith(f"{tenant_id}: ACTIVE - "), progress
    assert len(progress) == len(set(progress))

    shown = await stack.cli("tenants", "get", tenant_id)
    assert shown.exit_code == 0
    table = "\n".join(plain_lines(shown.stdout))
    assert f"Tenant {tenant_id}" in table
    assert "ACTIVE" in table
    assert stack.gate_name in table
    # The global --output works before the subcommand too.
    again = await stack.cli("--output", "json", "tenants", "get", tenant_id)
    assert json.loads(again.stdout)["id"] == tenant_id


async def test_wait_ends_at_migration_error_with_exit_1_and_retry_picks_the_migration(
    stack: Stack,
) -> None:
    tenant_id = unique_id("clifail")
    stack.service.script(tenant_id, 400)
    result = await stack.cli(
        "tenants", "create", tenant_id, "--name", "Refused", "--mode", "SCHEMA",
        "--tier", "BASIC", "--wait", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "MIGRATION_ERROR"
    lines = plain_lines(result.stderr)
    assert lines[-2].startswith(f"{tenant_id}: MIGRATION_ERROR")
    assert lines[-1].startswith(
        f"platformctl: error: tenant {tenant_id} is MIGRATION_ERROR, not ACTIVE"
    )

    stack.service.script(tenant_id, 200)
    retried = await stack.json("tenants", "retry", tenant_id)
    assert retried["id"] == tenant_id
    settled = await eventually(
        lambda: stack.json("tenants", "get", tenant_id), lambda t: t["status"] == "ACTIVE"
    )
    assert {m["status"] for m in settled["migrations"]} == {"SUCCEEDED"}
    events = await stack.json("tenants", "events", tenant_id)
    assert ("RETRY_REQUESTED", "operator", "retry-migration") in [
        (e["action"], e["actor"], e["reason"]) for e in events["items"]
    ]
    table = await stack.cli("tenants", "events", tenant_id)
    assert "RETRY_REQUESTED" in table.stdout

    nothing = await stack.cli("tenants", "retry", tenant_id)
    assert nothing.exit_code == 4
    assert nothing.stdout == ""
    assert nothing.stderr == (
        f"platformctl: error: tenant {tenant_id} is ACTIVE: nothing to retry (retry takes "
        "MIGRATION_ERROR, PROVISION_ERROR, DELETION_ERROR)\n"
    )


async def test_list_filters_and_follows_cursors(stack: Stack) -> None:
    ids = [unique_id("clilist") for _ in range(3)]
    for tenant_id in ids:
        created = await stack.json(
            "tenants", "create", tenant_id, "--name", "Listed", "--mode", "SCHEMA",
            "--tier", "STANDARD",
        )  # fmt: skip
        assert ACCEPTED.fullmatch(created["status"]), created

    async def active_standard() -> list[dict[str, Any]]:
        page = await stack.json("tenants", "list", "--status", "ACTIVE", "--tier", "STANDARD",
                                "--limit", "100000")  # fmt: skip
        assert page["nextCursor"] is None
        return page["items"]  # type: ignore[no-any-return]

    every = await eventually(active_standard, lambda items: set(ids) <= {t["id"] for t in items})
    assert {(t["status"], t["slaTier"]) for t in every} == {("ACTIVE", "STANDARD")}
    listed = [t["id"] for t in every]
    assert [i for i in listed if i in ids] == ids  # oldest first

    first = await stack.json(
        "tenants", "list", "--status", "ACTIVE", "--tier", "STANDARD", "--limit", "2"
    )
    assert [t["id"] for t in first["items"]] == listed[:2]
    assert first["nextCursor"] is not None
    rest = await stack.json(
        "tenants", "list", "--status", "ACTIVE", "--tier", "STANDARD", "--limit", "100000",
        "--cursor", first["nextCursor"],
    )  # fmt: skip
    assert [t["id"] for t in rest["items"]] == listed[2:]

    table = await stack.cli("tenants", "list", "--tier", "STANDARD", "--limit", "2")
    assert table.exit_code == 0
    assert "Tenants (2)" in table.stdout
    assert "more: --cursor " in table.stdout


async def test_delete_asks_or_needs_yes_and_restore_undoes_it(stack: Stack) -> None:
    tenant_id = await stack.provision()

    refused = await stack.cli("tenants", "delete", tenant_id, "--grace", "3600")
    assert refused.exit_code == 2
    assert "without --yes" in refused.stderr

    # On a terminal it asks; "n" keeps the tenant.
    code, shown = await on_a_terminal(stack, "tenants", "delete", tenant_id, answer=b"n\n")
    assert code == 1
    assert f"Delete tenant {tenant_id} (the server's default grace period)? [y/N]" in shown
    assert (await stack.json("tenants", "get", tenant_id))["status"] == "ACTIVE"

    deleted = await stack.json(
        "tenants", "delete", tenant_id, "--grace", "3600", "--reason", "contract ended", "--yes"
    )
    assert deleted["status"] == "DELETION_SCHEDULED"
    assert (deleted["deletion"]["reason"], deleted["deletion"]["requestedBy"]) == (
        "contract ended",
        "operator",
    )
    twice = await stack.cli("tenants", "delete", tenant_id, "--yes")
    assert twice.exit_code == 4
    assert "Operation not allowed in this status (409)" in twice.stderr

    restored = await stack.json("tenants", "restore", tenant_id)
    assert restored["status"] == "ACTIVE"
    assert restored["deletion"] is None
    again = await stack.cli("tenants", "restore", tenant_id)
    assert again.exit_code == 4


def _drain(controller: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the last process holding the terminal has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def on_a_terminal(stack: Stack, *args: str, answer: bytes = b"") -> tuple[int, str]:
    """Run the console script on a terminal (stdin, stdout and stderr), typing `answer`;
    its exit code and everything it wrote."""
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            str(CONSOLE_SCRIPT), *args, stdin=terminal, stdout=terminal, stderr=terminal,
            env=stack.env() | {"TERM": "xterm-256color", "COLUMNS": "120"},
        )  # fmt: skip
    finally:
        os.close(terminal)
    try:
        os.write(controller, answer)
        written = await asyncio.wait_for(asyncio.to_thread(_drain, controller), timeout=60)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        os.close(controller)
    return code, written.decode(errors="replace")


async def test_each_kind_of_failure_has_its_exit_code_and_one_line(stack: Stack) -> None:
    existing = await stack.provision()
    closed = f"http://127.0.0.1:{free_port()}"
    create = ("tenants", "create", unique_id("clierr"), "--name", "N", "--mode", "SCHEMA",
              "--tier", "BASIC")  # fmt: skip
    cases: list[tuple[tuple[str, ...], dict[str, Any], int, str]] = [
        (("tenants", "get", "no_such_tenant"), {}, 3, "Tenant not found (404): "),
        (("rollouts", "status", "ffffffffffff"), {}, 3, "Rollout not found (404)"),
        (("services", "versions", "no-such-service"), {}, 3, "Service not found (404)"),
        (
            ("tenants", "create", existing, "--name", "N", "--mode", "SCHEMA", "--tier", "BASIC"),
            {},
            4,
            "(409)",
        ),
        (create, {"token": "not-a-jwt"}, 5, "Authentication required (401)"),
        (create, {"token": stack.reader}, 5, "Insufficient scope (403)"),
        (create, {"token": ""}, 5, "no token: set PLATFORM_TOKEN or pass --token"),
        (
            ("tenants", "create", "Bad-Id", "--name", "N", "--mode", "SCHEMA", "--tier", "BASIC"),
            {},
            2,
            "Invalid request (422): invalid value for: id [id: ",
        ),
        (("tenants", "get", "no_such_tenant"), {"url": closed}, 6, "cannot connect to"),
    ]
    for args, options, code, says in cases:
        result = await stack.cli(*args, "--output", "json", **options)
        assert (result.exit_code, result.stdout) == (code, ""), (args, result.stderr)
        lines = plain_lines(result.stderr)
        assert len(lines) == 1, (args, lines)
        assert lines[0].startswith("platformctl: error: "), lines
        assert says in lines[0], (args, lines)

    usage = await stack.cli("tenants", "create", unique_id("cliuse"), "--mode", "SCHEMA")
    assert usage.exit_code == 2
    assert "Missing option '--name'" in usage.stderr
    bad_wave = await stack.cli("rollouts", "start", "--wave", "canary:limit=5")
    assert bad_wave.exit_code == 2
    assert "unknown key 'limit'" in bad_wave.stderr
    bad_choice = await stack.cli("tenants", "list", "--status", "SLEEPING")
    assert bad_choice.exit_code == 2


async def test_a_rollout_is_watched_wave_by_wave_to_succeeded(stack: Stack) -> None:
    ids = [await stack.provision(prefix="cliro") for _ in range(3)]
    stack.service.version = "v2"
    args = ["rollouts", "start", "--service", stack.service_name, "--wave", "canary:size=1",
            "--wave", "rest", "--concurrency", "2", "--watch", "-o", "json"]  # fmt: skip
    for tenant_id in ids:
        args += ["--tenant", tenant_id]
    result = await stack.cli(*args)
    assert result.exit_code == 0, result.stderr
    rollout = json.loads(result.stdout)
    assert rollout["status"] == "SUCCEEDED"
    assert [(w["name"], w["status"], w["counts"]["succeeded"]) for w in rollout["waves"]] == [
        ("canary", "SUCCEEDED", 1),
        ("rest", "SUCCEEDED", 2),
    ]
    assert rollout["request"]["concurrency"] == 2
    progress = plain_lines(result.stderr)
    assert progress[0] == f"rollout {rollout['id']}: RUNNING"
    assert progress[-1] == f"rollout {rollout['id']}: SUCCEEDED"
    assert "wave canary: SUCCEEDED 1/1 (1 succeeded, 0 failed, 0 skipped)" in progress
    assert "wave rest: SUCCEEDED 2/2 (2 succeeded, 0 failed, 0 skipped)" in progress
    for tenant_id in ids:
        tenant = await stack.json("tenants", "get", tenant_id)
        assert {m["service"]: m["version"] for m in tenant["migrations"]}[
            stack.service_name
        ] == "v2"

    shown = await stack.cli("rollouts", "status", rollout["id"])
    assert shown.exit_code == 0
    assert f"Rollout {rollout['id']}" in shown.stdout
    assert "canary" in shown.stdout


async def test_pause_resume_cancel_and_list(stack: Stack) -> None:
    ids = [await stack.provision(prefix="clipause") for _ in range(2)]
    start = ["rollouts", "start", "--service", stack.service_name, "--tenant", ids[0],
             "--tenant", ids[1], "--wave", "one:size=1", "--wave", "two",
             "--pause-after-each-wave"]  # fmt: skip
    first = await stack.json(*start)
    assert first["status"] == "RUNNING"

    async def status_of(rollout_id: str) -> dict[str, Any]:
        return await stack.json("rollouts", "status", rollout_id)  # type: ignore[no-any-return]

    await eventually(lambda: status_of(first["id"]), lambda r: r["status"] == "PAUSED")
    not_running = await stack.cli("rollouts", "pause", first["id"])
    assert not_running.exit_code == 4
    assert (await stack.json("rollouts", "resume", first["id"]))["status"] in (
        "RUNNING",
        "SUCCEEDED",
    )
    watched = await stack.cli("rollouts", "status", first["id"], "--watch")
    assert watched.exit_code == 0, watched.stderr
    assert "SUCCEEDED" in watched.stdout
    ended = await stack.cli("rollouts", "cancel", first["id"])
    assert ended.exit_code == 4

    second = await stack.json(*start)
    await eventually(lambda: status_of(second["id"]), lambda r: r["status"] == "PAUSED")
    assert (await stack.json("rollouts", "cancel", second["id"]))["status"] == "CANCELLED"
    cancelled = await stack.cli("rollouts", "status", second["id"], "--watch")
    assert cancelled.exit_code == 1
    assert cancelled.stderr.endswith(
        f"platformctl: error: rollout {second['id']} ended CANCELLED\n"
    )

    listed = await stack.json("rollouts", "list")
    assert {first["id"], second["id"]} <= {r["id"] for r in listed["items"]}
    only = await stack.json("rollouts", "list", "--status", "CANCELLED")
    assert second["id"] in {r["id"] for r in only["items"]}
    assert first["id"] not in {r["id"] for r in only["items"]}
    table = await stack.cli("rollouts", "list", token=stack.reader)
    assert table.exit_code == 0
    assert second["id"] in table.stdout


async def test_a_failed_rollout_exits_1_and_retry_failed_finishes_it(stack: Stack) -> None:
    good, bad = await stack.provision(prefix="cligood"), await stack.provision(prefix="clibad")
    stack.service.version = "v3"
    stack.service.script(bad, 400)
    failed = await stack.cli(
        "rollouts", "start", "--service", stack.service_name, "--tenant", good, "--tenant", bad,
        "--max-failure-ratio", "1", "--watch", "-o", "json",
    )  # fmt: skip
    assert failed.exit_code == 1
    rollout = json.loads(failed.stdout)
    assert rollout["status"] == "FAILED"
    assert [f["tenantId"] for f in rollout["failures"]] == [bad]
    assert failed.stderr.splitlines()[-1] == (
        f"platformctl: error: rollout {rollout['id']} ended FAILED: {rollout['statusReason']}"
    )

    stack.service.script(bad, 200)
    retried = await stack.json("rollouts", "retry-failed", rollout["id"])
    assert retried["passNumber"] == 2
    done = await stack.cli("rollouts", "status", rollout["id"], "--watch", "-o", "json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "SUCCEEDED"


async def test_services_versions_require_is_the_deploy_gate(stack: Stack) -> None:
    await stack.provision(prefix="cligate")
    spread = await stack.json("services", "versions", stack.gate_name)
    assert spread["service"] == stack.gate_name
    assert spread["tenants"] >= 1
    assert spread["versions"] == {GATE_VERSION: spread["tenants"]}

    met = await stack.cli("services", "versions", stack.gate_name, "--require", GATE_VERSION)
    assert met.exit_code == 0, met.stderr
    assert f"every tenant ({spread['tenants']}) is at {GATE_VERSION} or later" in met.stdout
    older = await stack.cli("services", "versions", stack.gate_name, "--require", "gate_0001")
    assert older.exit_code == 0

    newer = await stack.cli(
        "services", "versions", stack.gate_name, "--require", "gate_0003", "-o", "json"
    )
    assert newer.exit_code == 1
    document = json.loads(newer.stdout)
    assert document["requirement"] == {
        "version": "gate_0003",
        "met": False,
        "tenantsBelow": spread["tenants"],
        "below": {GATE_VERSION: spread["tenants"]},
        "withoutVersion": 0,
        "failed": 0,
    }
    n = spread["tenants"]
    assert newer.stderr == (
        f"platformctl: error: {stack.gate_name}: {n} of {n} tenants below gate_0003 "
        f"({n} at {GATE_VERSION})\n"
    )
    listed = await stack.json("services", "list")
    assert [s["service"] for s in listed["items"]] == [stack.service_name, stack.gate_name]


async def test_the_console_script_prints_plainly_without_a_terminal(stack: Stack) -> None:
    tenant_id = unique_id("cliproc")
    process = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT), "tenants", "create", tenant_id, "--name", "Piped",
        "--mode", "SCHEMA", "--tier", "BASIC", "--wait",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=stack.env(),
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    progress = plain_lines(stderr.decode())
    assert ACCEPTED.match(progress[0].removeprefix(f"{tenant_id}: ")), progress
    assert progress[-1].startswith(f"{tenant_id}: ACTIVE")
    table = plain_lines(stdout.decode())
    assert any(f"Tenant {tenant_id}" in line for line in table)
    assert any("ACTIVE" in line for line in table)


async def test_on_a_terminal_wait_draws_a_live_status_line(stack: Stack) -> None:
    tenant_id = unique_id("clitty")
    code, shown = await on_a_terminal(
        stack, "tenants", "create", tenant_id, "--name", "Live", "--mode", "SCHEMA",
        "--tier", "BASIC", "--wait",
    )  # fmt: skip
    assert code == 0, shown
    # The spinner redraws its line in place (cursor control), then the last line stays.
    assert "\x1b[" in shown
    assert f"{tenant_id}: ACTIVE" in shown
    assert f"Tenant {tenant_id}" in shown
