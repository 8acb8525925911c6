"""`platformctl servers list|show|cordon|uncordon` against the real API over real PostgreSQL
servers, in a metadata database of the test's own (`fleet_stage`: a cordon must never reach
the session's shared `default` server). Runs go through Typer's CliRunner from a thread, so
the event loop serving the API keeps going."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from typer.testing import CliRunner, Result

from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE
from cli.main import app
from tenancy.models import SlaTier, StorageMode
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.drains import stranded_fleet
from tests.support.logs import platform_logs_to
from tests.support.moves import move_stage
from tests.support.server_api import (
    SERVERS,
    URL_SECRET,
    fleet_settings,
    place_tenants,
    run_checks,
)
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

runner = CliRunner()
# Rich obeys these over its own terminal detection; the runs here must see no terminal.
RICH_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


async def cli(url: str, token: str, *args: str) -> Result:
    env: dict[str, str | None] = {"PLATFORM_URL": url, "PLATFORM_TOKEN": token} | dict.fromkeys(
        RICH_OVERRIDES
    )
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env, catch_exceptions=False)


def document(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


async def test_servers_list_show_cordon_uncordon_with_json_and_exit_codes(
    fleet_stage: FleetStage, keys_dir: Path
) -> None:
    settings = fleet_settings(fleet_stage)
    [tenant_id] = await place_tenants(settings, "cli_srv", 1, SlaTier.PREMIUM, StorageMode.SCHEMA)
    await run_checks(settings)
    operator = token_of(keys_dir, "olga", READ_SCOPE, SERVERS_WRITE_SCOPE)
    reader = token_of(keys_dir, "rita", READ_SCOPE)
    # The API's lines go to the real stderr, not into CliRunner's stdout.
    assert sys.__stderr__ is not None
    with platform_logs_to(sys.__stderr__):
        async with api_client(settings, keys_dir) as api:
            url = str(api.base_url)
            listed = document(await cli(url, operator, "servers", "list", "-o", "json"))
            api_list = (await api.get("/api/storage-servers")).json()
            table = await cli(url, operator, "servers", "list")
            cordoned = document(
                await cli(
                    url,
                    operator,
                    "servers",
                    "cordon",
                    "pg-c",
                    "--reason",
                    "maintenance",
                    "-o",
                    "json",
                )
            )
            again = await cli(url, operator, "servers", "cordon", "pg-c")
            refused = await cli(url, reader, "servers", "uncordon", "pg-c")
            unknown = await cli(url, operator, "servers", "show", "pg-nowhere")
            too_long = await cli(
                url, operator, "servers", "uncordon", "pg-c", "--reason", "x" * 501
            )
            shown = document(await cli(url, reader, "servers", "show", "pg-c", "-o", "json"))
            shown_table = await cli(url, reader, "servers", "show", "pg-c")
            uncordoned = document(
                await cli(url, operator, "servers", "uncordon", "pg-c", "-o", "json")
            )
            tenant = await cli(url, reader, "tenants", "get", tenant_id)

    assert [s["name"] for s in listed["items"]] == list(SERVERS)
    assert listed == api_list
    assert table.exit_code == 0, table.stderr
    assert "pg-a" in table.stdout
    assert "1/2" in table.stdout
    assert "PREMIUM" in table.stdout
    assert URL_SECRET not in table.stdout + json.dumps(listed)

    assert cordoned["state"] == "CORDONED"
    assert (cordoned["stateReason"], cordoned["stateChangedBy"]) == ("maintenance", "olga")
    assert again.exit_code == 4
    assert "already CORDONED" in again.stderr
    assert refused.exit_code == 5
    assert unknown.exit_code == 3
    assert "no storage server pg-nowhere" in unknown.stderr
    assert too_long.exit_code == 2
    assert shown["state"] == "CORDONED"
    assert [(e["type"], e["actor"], e["reason"]) for e in shown["events"]] == [
        ("CORDONED", "olga", "maintenance")
    ]
    assert "CORDONED (maintenance)" in shown_table.stdout
    assert "olga" in shown_table.stdout
    assert uncordoned["state"] == "ACTIVE"
    assert tenant.exit_code == 0, tenant.stderr
    assert "storageServer" in tenant.stdout
    assert "pg-c" in tenant.stdout


async def test_servers_drain_watch_and_cancel_drain(
    fleet_stage: FleetStage, keys_dir: Path, temporal_client: Client
) -> None:
    # The tenant has nowhere to go: the other entry has no room.
    settings, source, full = stranded_fleet(fleet_stage)
    tenant_id = unique_id("cli_drn")
    async with move_stage(settings) as stage:
        await stage.active(tenant_id)
    operator = token_of(keys_dir, "olga", READ_SCOPE, SERVERS_WRITE_SCOPE)
    assert sys.__stderr__ is not None
    with platform_logs_to(sys.__stderr__):
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            url = str(api.base_url)
            watched = await cli(
                url, operator, "servers", "drain", source, "--concurrency", "2",
                "--reason", "retired", "--watch", "-o", "json",
            )  # fmt: skip
            cancelled = document(
                await cli(url, operator, "servers", "cancel-drain", source, "-o", "json")
            )
            again = await cli(url, operator, "servers", "cancel-drain", source)
            emptied = await cli(url, operator, "servers", "drain", full, "--watch")
            twice = await cli(url, operator, "servers", "drain", full)
            too_many = await cli(url, operator, "servers", "drain", full, "--concurrency", "33")

    assert watched.exit_code == 1, (watched.stdout, watched.stderr)
    stopped = json.loads(watched.stdout)
    assert (stopped["state"], stopped["drain"]["reason"]) == ("DRAINING", "retired")
    assert [f["tenantId"] for f in stopped["drain"]["failures"]] == [tenant_id]
    assert "1/1: 0 moved, 1 failed, 0 running, ended" in watched.stderr
    assert f"storage server {source} ended DRAINING" in watched.stderr
    assert cancelled["state"] == "CORDONED"
    assert again.exit_code == 4
    assert "cancel-drain needs DRAINING" in again.stderr
    assert emptied.exit_code == 0, emptied.stderr
    assert "DRAINED" in emptied.stdout
    assert "0/0: 0 moved, 0 failed, 0 running, ended" in emptied.stdout
    assert twice.exit_code == 4
    assert too_many.exit_code == 2
