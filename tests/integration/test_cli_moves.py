"""`platformctl tenants move|cancel-move|update` against the real API with a worker running the
moves between two real PostgreSQL servers (tests.support.move_fleet). Runs go through Typer's
CliRunner from a thread, so the event loop serving the API and the worker keeps going."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from typer.testing import CliRunner, Result

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from cli.main import app
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.logs import platform_logs_to
from tests.support.move_fleet import (
    Services,
    actions,
    copy_will_fail,
    other_server,
    provision,
    scripted_services,
    target_held,
    tenant_becomes,
    two_server_settings,
)
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

runner = CliRunner()
# Rich obeys these over its own terminal detection; the runs here must see no terminal.
RICH_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with scripted_services() as found:
        yield found


async def cli(url: str, token: str, *args: str) -> Result:
    env: dict[str, str | None] = {"PLATFORM_URL": url, "PLATFORM_TOKEN": token} | dict.fromkeys(
        RICH_OVERRIDES
    )
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env, catch_exceptions=False)


def document(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


async def test_move_with_wait_ends_on_the_target_and_update_renames_and_changes_the_tier(
    fleet_stage: FleetStage, services: Services, temporal_client: Client, keys_dir: Path
) -> None:
    settings = two_server_settings(fleet_stage, services)
    tenant_id = unique_id("cmv")
    operator = token_of(keys_dir, "olga", READ_SCOPE, WRITE_SCOPE, SERVERS_WRITE_SCOPE)
    assert sys.__stderr__ is not None
    with platform_logs_to(sys.__stderr__):
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            url = str(api.base_url)
            source = (await provision(api, tenant_id))["storageServer"]
            target = other_server(source)
            renamed = document(
                await cli(
                    url, operator, "tenants", "update", tenant_id, "--name", "Renamed", "-o", "json"
                )
            )
            tiered = document(
                await cli(
                    url, operator, "tenants", "update", tenant_id, "--tier", "premium", "-o", "json"
                )
            )
            nothing = await cli(url, operator, "tenants", "update", tenant_id)
            moved = await cli(
                url,
                operator,
                "tenants",
                "move",
                tenant_id,
                "--to",
                target,
                "--reason",
                "noisy",
                "--wait",
            )
            after = (await api.get(f"/api/tenants/{tenant_id}")).json()
            onto_itself = await cli(url, operator, "tenants", "move", tenant_id, "--to", target)
            not_moving = await cli(url, operator, "tenants", "cancel-move", tenant_id)
            trail = await actions(api, tenant_id)

    assert (renamed["name"], renamed["status"]) == ("Renamed", "ACTIVE")
    # One pool for every tier: a new tier does not move the tenant.
    assert (tiered["slaTier"], tiered["status"], tiered["storageServer"]) == (
        "PREMIUM",
        "ACTIVE",
        source,
    )
    assert nothing.exit_code == 2
    assert "--name or --tier" in nothing.stderr
    assert moved.exit_code == 0, (moved.stdout, moved.stderr)
    assert "MOVING" in moved.stderr
    assert f"{source} -> {target}" in moved.stderr
    assert f"moved to {target}" in moved.stderr
    assert target in moved.stdout
    assert (after["status"], after["storageServer"]) == ("ACTIVE", target)
    assert onto_itself.exit_code == 2
    assert "toServer" in onto_itself.stderr
    assert not_moving.exit_code == 4
    assert "cancel-move needs MOVING" in not_moving.stderr
    assert ("MOVE_REQUESTED", f"{source} -> {target}: noisy") in trail
    assert [a for a, _ in trail if a == "TENANT_UPDATED"] == ["TENANT_UPDATED"] * 2


async def test_a_failed_move_fails_the_wait_and_cancel_move_rolls_a_move_back(
    fleet_stage: FleetStage, services: Services, temporal_client: Client, keys_dir: Path
) -> None:
    settings = two_server_settings(fleet_stage, services)
    failing, cancelled = unique_id("cmf"), unique_id("cmc")
    operator = token_of(keys_dir, "olga", READ_SCOPE, WRITE_SCOPE, SERVERS_WRITE_SCOPE)
    assert sys.__stderr__ is not None
    with platform_logs_to(sys.__stderr__):
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            url = str(api.base_url)
            failing_on = (await provision(api, failing))["storageServer"]
            await copy_will_fail(fleet_stage, failing, failing_on)
            failed = await cli(url, operator, "tenants", "move", failing, "--wait", "-o", "json")

            cancelled_on = (await provision(api, cancelled))["storageServer"]
            target = other_server(cancelled_on)
            async with target_held(fleet_stage, cancelled, target):
                asked = document(
                    await cli(
                        url, operator, "tenants", "move", cancelled, "--to", target, "-o", "json"
                    )
                )
                answered = document(
                    await cli(url, operator, "tenants", "cancel-move", cancelled, "-o", "json")
                )
            back = await tenant_becomes(api, cancelled, "ACTIVE")
            trail = await actions(api, cancelled)

    assert failed.exit_code == 1, (failed.stdout, failed.stderr)
    assert json.loads(failed.stdout)["storageServer"] == failing_on
    assert "MOVE_FAILED" in failed.stderr
    assert "copying failed" in failed.stderr
    assert f"ACTIVE on {failing_on}" in failed.stderr
    assert (asked["status"], asked["move"]["toServer"], asked["move"]["phase"]) == (
        "MOVING",
        target,
        "PREPARING",
    )
    assert answered["status"] == "MOVING"
    assert (back["storageServer"], back["move"]) == (cancelled_on, None)
    assert [a for a, _ in trail if a in ("MOVE_CANCELLED", "MOVE_FAILED", "TENANT_MOVED")] == [
        "MOVE_CANCELLED"
    ]
