"""No acknowledged write is lost by a move: the reference service's runtime endpoint, which
finds the tenant through the directory, is written to continuously (about 50 writes a second,
each with a text of its own) while a worker moves the tenant between two real PostgreSQL
servers (`fleet_stage`'s extra ones).

Afterwards every write the service acknowledged (2xx) is on the target, none is on the source
only, and the writes made during the freeze were refused (503) or waited: none vanished. The
assertion's message gives how many were refused and the longest refused window, the freeze as
a service sees it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import DIRECTORY_SCOPE
from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.settings import DownstreamSettings
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.note_writer import NoteWriter, notes_on, refused_windows
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SHARED = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"}
# Writes acknowledged on the source before the move and on the target after it.
SETTLE_WRITES = 25
# How much longer than the move itself the service may refuse writes: a call's way back.
FOLLOW_SLACK = 1.0


@pytest.fixture(scope="module")
def provisioning_services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


async def tenant_of(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["SCHEMA", "DATABASE"])
async def test_no_acknowledged_write_is_lost_by_a_move(
    mode: str,
    fleet_stage: FleetStage,
    provisioning_services: tuple[tuple[str, str], ...],
    service_database_urls: dict[str, str],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    settings = fleet_stage.settings(
        provisioning_services,
        [
            fleet_stage.server("pg-a", 1, "shared", 10),
            fleet_stage.server("pg-b", 2, "shared", 10),
        ],
        SHARED,
    )
    source, target = fleet_stage.extra
    tenant_id = unique_id("mvw")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        body = {"id": tenant_id, "name": "Writes", "storageMode": mode, "slaTier": "BASIC"}
        created = await api.post("/api/tenants", json=body)
        assert created.status_code == 202, created.text
        await eventually(
            lambda: tenant_of(api, tenant_id), lambda t: t["status"] == "ACTIVE", timeout=90
        )
        reference = DownstreamSettings(
            service_name="backend-service",
            database_url=service_database_urls["backend-service"],
            platform_public_key_file=keys_dir / "platform-signing.pem",
            directory_url=str(api.base_url),
            directory_token=token_of(keys_dir, "backend-service", DIRECTORY_SCOPE),
            # As deployed: the service follows the move by the storage's refusal, not by age.
            directory_max_age=timedelta(seconds=5),
        )
        with serve(create_downstream_app(reference)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as service:
                writer = NoteWriter(service, tenant_id, rate=50)
                writer.start()
                await eventually(
                    lambda: writer.acknowledged_since(0),
                    lambda n: n >= SETTLE_WRITES,
                    timeout=30,
                )
                began = time.monotonic()
                asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
                assert asked.status_code == 202, asked.text
                moved = await eventually(
                    lambda: tenant_of(api, tenant_id),
                    lambda t: t["status"] == "ACTIVE",
                    timeout=120,
                )
                move_seconds = time.monotonic() - began
                switched = len(writer.writes)
                await eventually(
                    lambda: writer.acknowledged_since(switched),
                    lambda n: n >= SETTLE_WRITES,
                    timeout=60,
                )
                writes = await writer.stop()

    on_target = notes_on(target, tenant_id, mode) or set()
    on_source = notes_on(source, tenant_id, mode) or set()
    acknowledged = {w.text for w in writes if w.acknowledged}
    refused = [w for w in writes if not w.acknowledged]
    windows = refused_windows(writes)
    longest = max(windows, default=0.0)
    waited = max((w.answered - w.sent for w in writes if w.acknowledged), default=0.0)
    figures = (
        f"{len(writes)} writes, {len(acknowledged)} acknowledged, {len(refused)} refused "
        f"(statuses {sorted({w.status for w in refused})}), longest refused window "
        f"{longest:.2f}s over {len(windows)} windows, longest acknowledged write {waited:.2f}s, "
        f"move {move_seconds:.2f}s"
    )
    assert moved["storageServer"] == "pg-b", moved
    assert acknowledged - on_target == set(), f"acknowledged, not on the target; {figures}"
    assert on_source - on_target == set(), f"on the source only; {figures}"
    assert on_target <= {w.text for w in writes}, figures
    # The move showed: writes went to the source first, then only to the target.
    assert on_source, figures
    assert on_target - on_source, figures
    # Every refusal is the service's 503 (come back later), none a failure of the service.
    assert {w.status for w in refused} <= {503}, figures
    assert len(windows) <= 1, figures
    # The service follows the move as it happens (refused by the frozen source, it resolves
    # again; MOVING is asked again at the next call), not once its directory entry is old or
    # its pool's wait for a connection the frozen source refuses is over: neither refused
    # nor held much longer than the move.
    assert longest <= move_seconds + FOLLOW_SLACK, figures
    assert waited <= move_seconds + FOLLOW_SLACK, figures
    print(figures)  # noqa: T201 - the figures of the run, shown with -s
