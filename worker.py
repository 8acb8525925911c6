"""The Temporal worker: runs `ProvisionTenantWorkflow`, `DeleteTenantWorkflow`,
`MoveTenantWorkflow` and their activities, and the outbox relay that publishes lifecycle
events (`PLATFORM_EVENTS_BACKEND`).

Run with `python worker.py`. It applies the platform's metadata migrations, registers the
search attributes it needs, and on SIGTERM/SIGINT stops polling and lets in-flight
activities finish before it exits. Logs are structured (`PLATFORM_LOG_FORMAT`), metrics are
served at `PLATFORM_WORKER_METRICS_ADDRESS` when set, and traces follow `OTEL_TRACES_EXPORTER`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from datetime import timedelta
from typing import Any

import httpx
import structlog
from opentelemetry.sdk.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.worker import (
    FixedSizeSlotSupplier,
    PollerBehaviorSimpleMaximum,
    Worker,
    WorkerTuner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.commands import CommandChannel
from activities.deletion import DeletionActivities
from activities.drains import DrainActivities
from activities.interceptor import ActivityContextInterceptor
from activities.metadata import MetadataActivities
from activities.migrations import MigrationActivities
from activities.moves import MoveActivities
from activities.replies import ReplyListener, consuming_replies
from activities.rollouts import RolloutActivities
from activities.storage import StorageActivities
from infra.background import in_background, repeat
from infra.db.commands import CommandRepository
from infra.db.deletions import DeletionRepository
from infra.db.drains import DrainRepository
from infra.db.fleet import StorageFleet
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.db.schema import apply_platform_migrations
from infra.db.server_checks import checking_servers, refuse_missing_servers
from infra.db.servers import ServerRepository
from infra.db.tenant_moves import MoveRepository
from infra.events.buses import outbox_relay
from infra.events.command_bus import CommandBus, consumer_name
from infra.events.commands import load_reply_keys
from infra.events.pruner import running_pruner
from infra.limits import ServerLimits
from infra.security.signing import CallSigner
from infra.slots import SharedSlots
from infra.telemetry.logging import configure_logging, redact
from infra.telemetry.metrics import TENANT_GAUGE_INTERVAL, tenant_gauge
from infra.telemetry.tracing import (
    client_interceptors,
    instrument_http_client,
    shutdown_tracing,
    tracer_provider_from_env,
)
from infra.temporal import connect_client, ensure_search_attributes, exit_process, worker_runtime
from tenancy.naming import migration_task_queue
from tenancy.settings import Settings, get_settings
from workflows.delete.workflow import DeleteTenantWorkflow
from workflows.drain.workflow import DrainServerWorkflow
from workflows.move.workflow import MoveTenantWorkflow
from workflows.provision.workflow import ProvisionTenantWorkflow
from workflows.rollout.contracts import rollout_task_queue
from workflows.rollout.workflow import FleetRolloutWorkflow

SERVICE_NAME = "platform-worker"
# Activity slots beyond the storage and migration caps, for metadata reads and writes.
METADATA_ACTIVITY_SLOTS = 16
SHUTDOWN_GRACE = timedelta(seconds=15)
# Batches of rollouts at once on this worker (each calls up to its rollout's concurrency).
ROLLOUT_ACTIVITY_SLOTS = 8
STORAGE_CONNECT_WAIT = timedelta(seconds=10)
# Connections to each storage server beyond the creations' slots, for deletions' drops:
# creations that are slow or wait for a lock must not hold every connection a drop could use.
STORAGE_DROP_CONNECTIONS = 2
# How often the worker looks for moved tenants' sources whose retention is over.
SOURCE_DROP_INTERVAL = timedelta(minutes=1)
_log = structlog.stdlib.get_logger("platform.worker")
# The sandbox with every module passed through: a new run no longer re-imports (and, without
# bytecode files, recompiles) its workflow module, which cost the worker about a third of its
# CPU per tenant. Builtins stay restricted; the full sandbox still checks every workflow in
# the replay test (tests/test_replay.py), which replays each recorded history in it.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)


@asynccontextmanager
async def worker_activities(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    metric_meter: MetricMeter | None = None,
    gauge_interval: timedelta = TENANT_GAUGE_INTERVAL,
    client: Client | None = None,
) -> AsyncIterator[list[Callable[..., Any]]]:
    """The activity methods, bound to pools and one HTTP client that live as long as this.

    With a `tracer_provider` the HTTP client's calls are traced (and carry `traceparent`);
    with a `metric_meter` the tenants' and rollouts' gauges are refreshed every `gauge_interval`.
    Unless `settings.events_backend` is `none`, the outbox relay publishes lifecycle events
    meanwhile (its metrics through `metric_meter`); published events and settled commands are
    pruned past `settings.events_retention`. When a service has transport events, the
    command channel sends its calls and the reply listener completes them through `client`.
    """
    if settings.events_services() and client is None:
        raise RuntimeError("services with transport events need the Temporal client")
    reply_keys = {
        service.name: load_reply_keys(service.reply_key_paths)
        for service in settings.events_services()
    }
    metadata_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.require_database_url(), open=False, min_size=1, max_size=10
    )
    servers = ServerRepository(metadata_pool)
    fleet = StorageFleet.connect(
        settings.storage_fleet(),
        settings.service_db_roles(),
        servers,
        # One connection per storage creation this worker may run at once on the server (its
        # slot, see ServerLimits), and a few that no creation can take.
        max_connections=settings.max_concurrent_storage_creations + STORAGE_DROP_CONNECTIONS,
        connect_wait=STORAGE_CONNECT_WAIT,
    )
    _log.info(
        "activity resources",
        database=redact(settings.require_database_url()),
        storage_servers={s.name: redact(s.dsn) for s in fleet.servers},
        services={s.name: s.describe() for s in settings.downstream_services},
    )
    async with httpx.AsyncClient() as http, metadata_pool, fleet:
        instrument_http_client(http, tracer_provider)
        tenants = TenantRepository(metadata_pool)
        metadata = MetadataActivities(tenants, settings)
        storage = StorageActivities(
            fleet,
            servers,
            tenants,
            ServerLimits(settings.max_concurrent_storage_creations),
            settings.placement_map(),
        )
        signer = CallSigner(settings.require_signing_key_file(), settings.downstream_token_ttl)
        command_bus = CommandBus(
            settings.events_url,
            consumer=consumer_name(settings.task_queue),
            services=list(reply_keys),
        )
        command_rows = CommandRepository(metadata_pool)
        commands = CommandChannel(command_bus, command_rows, signer)
        migrations = MigrationActivities(
            http,
            tenants,
            settings.downstream_services,
            signer,
            commands,
            # Each service's call slots, shared by its queue's worker and the local attempts.
            {
                s.name: SharedSlots(settings.max_concurrent_migrations)
                for s in settings.downstream_services
            },
        )
        rollouts = RolloutActivities(
            RolloutRepository(metadata_pool),
            tenants,
            fleet,
            http,
            signer,
            settings.downstream_services,
            commands,
        )
        deletion = DeletionActivities(
            DeletionRepository(metadata_pool),
            fleet,
            http,
            signer,
            settings.downstream_services,
            settings,
            commands,
        )
        moves = MoveActivities(
            MoveRepository(metadata_pool),
            tenants,
            RolloutRepository(metadata_pool),
            fleet,
            settings,
        )
        drains = DrainActivities(
            DrainRepository(metadata_pool), MoveRepository(metadata_pool), tenants, settings
        )
        replies: AbstractAsyncContextManager[None] = nullcontext()
        if reply_keys:
            assert client is not None
            listener = ReplyListener(
                client,
                command_rows,
                reply_keys,
                migrations.ledger,
                deletion.teardowns,
                metric_meter or MetricMeter.noop,
                on_taken=commands.replied,
            )
            replies = consuming_replies(command_bus, listener.handle)
        gauge: AbstractAsyncContextManager[None] = (
            tenant_gauge(tenants, RolloutRepository(metadata_pool), metric_meter, gauge_interval)
            if metric_meter is not None
            else nullcontext()
        )
        # The outbox relay lives with the worker's resources (infra.events.relay says why), and
        # so does the pruning of published events and settled commands (infra.events.pruner).
        async with (
            gauge,
            checking_servers(
                fleet.servers,
                servers,
                metric_meter or MetricMeter.noop,
                settings.storage_check_interval,
            ),
            replies,
            # Moved tenants' sources, dropped once their retention is over.
            in_background(
                repeat(
                    moves.drop_due_sources,
                    min(SOURCE_DROP_INTERVAL, settings.move_source_retention),
                    "drop moved sources",
                ),
                "drop-moved-sources",
            ),
            outbox_relay(settings, meter=metric_meter),
            running_pruner(metadata_pool, settings.events_retention),
        ):
            yield [
                metadata.load_plan,
                metadata.record_tenant,
                metadata.claim_tenant,
                metadata.transition_status,
                metadata.mark_migration_failed,
                metadata.record_event,
                storage.create_storage,
                migrations.migrate_service,
                deletion.stop_provisioning,
                deletion.schedule_deletion,
                deletion.restore_tenant,
                deletion.load_deletion,
                deletion.backup_storage,
                deletion.teardown_service,
                deletion.drop_storage,
                moves.load_move,
                moves.set_move_phase,
                moves.set_move_reason,
                moves.prepare_move_target,
                moves.freeze_move_source,
                moves.copy_move,
                moves.verify_move,
                moves.switch_move,
                moves.undo_move_storage,
                moves.roll_back_move,
                drains.load_drain,
                drains.begin_drain_move,
                drains.drain_tenant_state,
                drains.record_drain_progress,
                drains.finish_drain,
                rollouts.run_rollout_batch,
                rollouts.set_rollout_status,
                rollouts.set_wave_status,
            ]


async def refuse_unknown_servers(settings: Settings) -> None:
    """Raise `FleetMismatch` when tenants live on a server the settings lack (see
    infra.db.server_checks)."""
    async with AsyncConnectionPool(
        settings.require_database_url(), open=False, min_size=1, max_size=1
    ) as pool:
        await refuse_missing_servers(settings.storage_fleet(), ServerRepository(pool))


def service_tuner(slots: SharedSlots) -> WorkerTuner:
    """A service worker's slots: its activity slots are the service's shared call slots (it
    runs no workflows, local activities or Nexus tasks)."""
    unused = FixedSizeSlotSupplier(1)
    return WorkerTuner.create_composite(
        workflow_supplier=unused,
        activity_supplier=slots,
        local_activity_supplier=unused,
        nexus_supplier=unused,
    )


class PlatformWorkers:
    """The workers of one process, started and stopped together: one for the platform's
    task queue, and one per downstream service for its migration calls."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> PlatformWorkers:
        async with AsyncExitStack() as stack:
            for worker in self.workers:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


def build_worker(
    client: Client, settings: Settings, activities: list[Callable[..., Any]]
) -> PlatformWorkers:
    """The platform task queue's worker and one worker per configured service; every
    activity attempt gets a log context. The client's own interceptors (tracing, see
    `connect_client`) apply to them as well.

    The platform queue's worker takes at most as many activities at once as the storage and
    migration caps allow plus room for the short metadata ones, so a burst beyond the caps
    waits in Temporal's task queue (no timeout runs there) instead of in the caps' queues,
    where waiting counts against each attempt's start-to-close timeout. It keeps
    `migrate_service` for runs started before per-service queues.

    Each service's worker runs only `migrate_service`, at most
    `max_concurrent_migrations` calls at once: the service's backlog waits in its own task
    queue, so a hung service holds its own slots and never those of another. The cap is per
    worker process; `migration_queue_activities_per_second` sets a rate the Temporal server
    enforces across all workers of a service's queue.
    """
    platform = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[
            ProvisionTenantWorkflow,
            DeleteTenantWorkflow,
            MoveTenantWorkflow,
            DrainServerWorkflow,
        ],
        activities=activities,
        interceptors=[ActivityContextInterceptor()],
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
        max_concurrent_activities=settings.max_concurrent_storage_creations
        + settings.max_concurrent_migrations
        + METADATA_ACTIVITY_SLOTS,
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflow_runner=WORKFLOW_RUNNER,
    )
    (migrate,) = (fn for fn in activities if fn.__name__ == "migrate_service")
    # The slots the activities' local attempts draw on, when they are the worker's own.
    owner = getattr(migrate, "__self__", None)
    slots = owner.slots if isinstance(owner, MigrationActivities) else {}
    # Calls are made locally only for the services whose queues this process polls, and
    # only without a rate, which the Temporal server enforces across a queue's workers.
    if (
        isinstance(owner, MigrationActivities)
        and not settings.migration_queue_activities_per_second
    ):
        owner.attempt_locally(service.name for service in settings.downstream_services)
    per_service = [
        Worker(
            client,
            task_queue=migration_task_queue(settings.task_queue, service.name),
            activities=[migrate],
            interceptors=[ActivityContextInterceptor()],
            graceful_shutdown_timeout=SHUTDOWN_GRACE,
            tuner=service_tuner(
                slots.get(service.name) or SharedSlots(settings.max_concurrent_migrations)
            ),
            # Each outstanding poll holds one of the shared slots: one poll, so local attempts
            # keep the others while the queue is empty.
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=1),
            max_task_queue_activities_per_second=settings.migration_queue_activities_per_second,
        )
        for service in settings.downstream_services
    ]
    rollout_names = {"run_rollout_batch", "set_rollout_status", "set_wave_status"}
    # Rollouts have a queue and slots of their own: a 10,000-tenant rollout never holds a slot
    # that a sign-up's provisioning needs, and the two scale apart.
    rollout = Worker(
        client,
        task_queue=rollout_task_queue(settings.task_queue),
        workflows=[FleetRolloutWorkflow],
        activities=[fn for fn in activities if fn.__name__ in rollout_names],
        interceptors=[ActivityContextInterceptor()],
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
        max_concurrent_activities=ROLLOUT_ACTIVITY_SLOTS,
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflow_runner=WORKFLOW_RUNNER,
    )
    return PlatformWorkers([platform, *per_service, rollout])


async def main() -> None:
    """Prepare the database and namespace, then work until SIGTERM or SIGINT."""
    settings = get_settings()
    configure_logging(settings)
    tracer_provider = tracer_provider_from_env(SERVICE_NAME)
    runtime = worker_runtime(settings)
    if settings.worker_metrics_address:
        _log.info("serving metrics", url=f"http://{settings.worker_metrics_address}/metrics")
    try:
        await asyncio.to_thread(apply_platform_migrations, settings.require_database_url())
        # Before any step runs: a list that forgot a server tenants live on is refused.
        await refuse_unknown_servers(settings)
        client = await connect_client(
            settings, runtime=runtime, interceptors=client_interceptors(tracer_provider)
        )
        await ensure_search_attributes(client)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with worker_activities(
            settings,
            tracer_provider=tracer_provider,
            metric_meter=runtime.metric_meter if settings.worker_metrics_address else None,
            client=client,
        ) as activities:
            workers = build_worker(client, settings, activities)
            async with workers:
                _log.info(
                    "worker polling task queue",
                    task_queue=settings.task_queue,
                    migration_task_queues=[w.task_queue for w in workers.workers[1:]],
                )
                await stop.wait()
                _log.info("shutting down: finishing in-flight tasks")
    finally:
        shutdown_tracing(tracer_provider)
    _log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
    exit_process(0)
