"""Workers with a task queue left unpolled: what a deploy leaves behind when a run schedules
calls on a queue the running workers do not poll (a service removed from their settings, or
old workers that never polled the per-service queues)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import Client

from tenancy.naming import migration_task_queue
from tenancy.settings import Settings
from worker import build_worker, worker_activities


@asynccontextmanager
async def worker_not_polling(
    client: Client, settings: Settings, service: str
) -> AsyncIterator[str]:
    """A real worker built as `python worker.py` builds it, for every service of `settings`,
    minus the worker of `service`'s migration queue; yields that queue's name."""
    unpolled = migration_task_queue(settings.task_queue, service)
    others = tuple(s for s in settings.downstream_services if s.name != service)
    assert len(others) < len(settings.downstream_services), f"{service} is not configured"
    # The activities (the plan among them) know every service; the per-service workers are
    # built from settings without it, so no poller of its queue is even registered.
    polled = settings.model_copy(update={"downstream_services": others})
    async with (
        worker_activities(settings, client=client) as activities,
        build_worker(client, polled, activities),
    ):
        yield unpolled
