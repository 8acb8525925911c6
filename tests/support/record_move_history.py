"""Record `MoveTenantWorkflow`'s histories from real moves, for the replay test.

    make record-history ONLY=moves
    python -m tests.support.record_move_history [--suffix S]

Starts its own embedded PostgreSQL for the metadata, two more as storage servers `pg-a` and
`pg-b` with the deployment's roles (`storage_layout()`, as the tests' `extra_pg_servers`), a
Temporal dev server, a scripted downstream service and a worker, and writes, never
overwriting one:

    move_completed_<suffix>    a SCHEMA tenant moved from pg-a to pg-b
    move_rolled_back_<suffix>  a copy that fails for good (row security on a service's table:
                               pg_dump refuses it), rolled back
    move_cancelled_<suffix>    a move held in PREPARING (the target's storage lock) and
                               cancelled by the `request_cancel_move` update

Commit the new files; never edit old ones. `tests/test_replay.py` replays every one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.gateway import WorkflowGateway
from devstack.postgres import EmbeddedPostgres
from devstack.roles import apply_layout, service_role
from devstack.temporal import cli_path
from infra.db.schema import apply_platform_migrations
from infra.db.storage import lock_storage
from infra.db.tenant_moves import MoveRepository
from infra.security.keys import generate_private_key
from infra.temporal import ensure_search_attributes, exit_process
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id, storage_name
from tenancy.settings import DownstreamService, Settings
from tests.support.move_faults import on_storage, server_entry
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from tests.support.storage_fleet import storage_layout
from worker import build_worker, worker_activities
from workflows.move.contracts import move_workflow_id

ACTOR = "recorder"
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
_log = logging.getLogger("record_move_history")


def _save(history: WorkflowHistory, name: str) -> None:
    target = HISTORIES / f"{name}.json"
    if target.exists():
        raise FileExistsError(f"{target} exists: histories are never overwritten")
    target.write_text(history.to_json())
    _log.info("wrote %s (%d events)", target, len(history.events))


async def _active(client: Client, gateway: WorkflowGateway, tenant_id: str) -> None:
    await gateway.provision(
        TenantSpec(
            id=tenant_id, name=tenant_id, storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
        )
    )
    await client.get_workflow_handle(provision_workflow_id(tenant_id)).result()


async def _move(
    client: Client, gateway: WorkflowGateway, moves: MoveRepository, settings: Settings, name: str
) -> None:
    """Begin the tenant's move to pg-b as the API does (its row, then its run)."""
    await moves.begin(
        name, ACTOR, "recording", "pg-b", settings.storage_fleet(), settings.placement_map()
    )
    await gateway.start_move(name, ACTOR)


async def record_moves(
    client: Client, settings: Settings, source: str, target: str, suffix: str
) -> None:
    """Each scenario's move, and its history saved."""
    gateway = WorkflowGateway(client, settings)
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1) as pool:
        moves = MoveRepository(pool)

        completed = f"mvdone_{suffix}"
        await _active(client, gateway, completed)
        await _move(client, gateway, moves, settings, completed)
        handle = client.get_workflow_handle(move_workflow_id(completed))
        await handle.result()
        _save(await handle.fetch_history(), f"move_completed_{suffix}")

        rolled_back = f"mvfail_{suffix}"
        await _active(client, gateway, rolled_back)
        table = sql.Identifier(storage_name(rolled_back), "guarded")
        with psycopg.connect(on_storage(source), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(table))
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO backend_service").format(table))
        await _move(client, gateway, moves, settings, rolled_back)
        handle = client.get_workflow_handle(move_workflow_id(rolled_back))
        await handle.result()
        _save(await handle.fetch_history(), f"move_rolled_back_{suffix}")

        cancelled = f"mvcancel_{suffix}"
        await _active(client, gateway, cancelled)
        async with await psycopg.AsyncConnection.connect(
            on_storage(target), autocommit=True
        ) as holder:
            await lock_storage(holder, storage_name(cancelled), session=True)
            await _move(client, gateway, moves, settings, cancelled)
            decision = await gateway.cancel_move(cancelled, ACTOR)
            assert decision is not None
            assert decision.accepted
        handle = client.get_workflow_handle(move_workflow_id(cancelled))
        await handle.result()
        _save(await handle.fetch_history(), f"move_cancelled_{suffix}")


async def main(suffix: str) -> None:
    """Bring up the servers in a temporary folder and record."""
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        base = Path(scratch)
        metadata, source, target = (
            stack.enter_context(EmbeddedPostgres(base / name, free_port(), durable=False))
            for name in ("pg", "pg-a", "pg-b")
        )
        for server in (source, target):
            apply_layout(server.url, storage_layout())
        with psycopg.connect(metadata.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("platform")))
        database_url = metadata.url.rsplit("/", 1)[0] + "/platform"
        apply_platform_migrations(database_url)
        service = ScriptedService(version="0002")
        url = stack.enter_context(serve(service.app()))
        key_file = base / "signing.pem"
        generate_private_key(key_file)
        settings = Settings(
            database_url=database_url,
            downstream_services=(
                DownstreamService(
                    name="backend-service", base_url=url, db_role=service_role("backend-service")
                ),
            ),
            storage_servers=(
                server_entry("pg-a", source.url, "shared"),
                server_entry("pg-b", target.url, "spare"),
            ),
            placement=dict.fromkeys(SlaTier, "shared"),
            migration_max_attempts=2,
            migration_initial_interval=timedelta(milliseconds=50),
            signing_key_file=key_file,
            events_backend="none",
        )
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter, dev_server_existing_path=str(cli_path())
        )
        try:
            await ensure_search_attributes(env.client)
            async with (
                worker_activities(settings) as activities,
                build_worker(env.client, settings, activities),
            ):
                await record_moves(env.client, settings, source.url, target.url, suffix)
        finally:
            await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suffix",
        default=datetime.now(UTC).strftime("%Y%m%d%H%M"),
        help="names this recording (file names and tenant ids); default: the UTC time",
    )
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(parser.parse_args().suffix))
    exit_process(0)
