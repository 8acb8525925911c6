"""The Temporal worker: runs `ProvisionTenantWorkflow` and its activities.

Run with `python worker.py`. It applies the platform's metadata migrations, registers the
search attributes it needs, and on SIGTERM/SIGINT stops polling and lets in-flight
activities finish before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.worker import Worker

from activities.metadata import MetadataActivities
from activities.migrations import MigrationActivities
from activities.storage import StorageActivities
from tenancy.repository import TenantRepository
from tenancy.schema import apply_platform_migrations
from tenancy.settings import Settings, get_settings
from tenancy.signing import CallSigner
from tenancy.storage import StorageAdmin
from tenancy.temporal import connect_client, ensure_search_attributes
from workflows.provision import ProvisionTenantWorkflow

_log = logging.getLogger("platform.worker")


@asynccontextmanager
async def worker_activities(settings: Settings) -> AsyncIterator[list[Callable[..., Any]]]:
    """The activity methods, bound to pools and one HTTP client that live as long as this."""
    metadata_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.require_database_url(), open=False, min_size=1, max_size=10
    )
    # CREATE DATABASE cannot run inside a transaction block.
    storage_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.require_storage_database_url(),
        open=False,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
    )
    async with httpx.AsyncClient() as http, metadata_pool, storage_pool:
        tenants = TenantRepository(metadata_pool)
        metadata = MetadataActivities(tenants, settings)
        storage = StorageActivities(
            StorageAdmin(storage_pool, settings.require_storage_database_url()), tenants
        )
        signer = CallSigner(settings.require_signing_key_file(), settings.downstream_token_ttl)
        migrations = MigrationActivities(http, tenants, settings.downstream_services, signer)
        yield [
            metadata.load_plan,
            metadata.record_tenant,
            metadata.transition_status,
            metadata.mark_migration_failed,
            storage.create_storage,
            migrations.migrate_service,
        ]


def build_worker(
    client: Client, settings: Settings, activities: list[Callable[..., Any]]
) -> Worker:
    """A worker for the platform's task queue."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ProvisionTenantWorkflow],
        activities=activities,
        graceful_shutdown_timeout=timedelta(seconds=15),
    )


async def main() -> None:
    """Prepare the database and namespace, then work until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    await asyncio.to_thread(apply_platform_migrations, settings.require_database_url())
    client = await connect_client(settings)
    await ensure_search_attributes(client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with worker_activities(settings) as activities:
        worker = build_worker(client, settings, activities)
        async with worker:
            _log.info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
            _log.info("shutting down: finishing in-flight tasks")
    _log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
