"""The baseline: the workflow's steps run by the same activity functions, in-process, with no
Temporal in between (no history, no task queues, no API; retries in a plain loop).

Each activity runs inside the SDK's `ActivityEnvironment`, which gives it the activity
context it reads (`activity.info()`, heartbeats, the metric meter) without a worker. The
pools, HTTP client, signer and storage caps come from `worker.worker_activities`, built
from the settings the stack's worker runs with, so both paths do the same SQL and the same
signed downstream calls against the same servers. The worker caps migration calls with the
slots of each service's task queue; here a semaphore per service stands in for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tenancy.contracts import (
    CreateStorageInput,
    MigrateInput,
    PlanInput,
    ProvisioningPlan,
    RecordTenantInput,
    TransitionInput,
)
from tenancy.models import StorageLocation, TenantSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from worker import worker_activities
from workflows.provision import options
from workflows.provision.options import ActivityOptions

ResultT = TypeVar("ResultT")
ACTOR = "bench-direct"


class DirectProvisioner:
    """Provisions a tenant by calling the activities one after another, as the workflow would."""

    def __init__(self, activities: list[Callable[..., Any]], migrations_per_service: int) -> None:
        self._activities = {fn.__name__: fn for fn in activities}
        self._migrations_per_service = migrations_per_service
        self._service_slots: dict[str, asyncio.Semaphore] = {}

    async def _migrate(
        self, request: MigrateInput, opts: ActivityOptions, workflow_id: str, run_id: str
    ) -> Any:
        """One service's call, waiting for one of the service's slots outside the attempt
        (as a task waits in the service's task queue)."""
        slots = self._service_slots.setdefault(
            request.service, asyncio.Semaphore(self._migrations_per_service)
        )
        async with slots:
            return await self._with_retries("migrate_service", request, opts, workflow_id, run_id)

    async def _run(
        self,
        name: str,
        arg: Any,
        opts: ActivityOptions,
        workflow_id: str,
        run_id: str,
    ) -> Any:
        # One environment per call: its `info` is what `activity.info()` returns, and
        # concurrent calls must not share it.
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            ActivityEnvironment.default_info(),
            activity_type=name,
            workflow_id=workflow_id,
            workflow_run_id=run_id,
            started_time=datetime.now(UTC),
            start_to_close_timeout=opts.start_to_close,
            schedule_to_close_timeout=opts.schedule_to_close,
            heartbeat_timeout=opts.heartbeat,
            is_local=opts.local,
        )
        return await env.run(self._activities[name], arg)

    async def _with_retries(
        self, name: str, arg: Any, opts: ActivityOptions, workflow_id: str, run_id: str
    ) -> Any:
        """Retry as the step's retry policy says: a retryable failure (a throttled storage
        creation, a metadata blip) is tried again here as Temporal would."""
        policy = opts.retry
        delay = policy.initial_interval.total_seconds()
        attempt = 1
        while True:
            try:
                return await self._run(name, arg, opts, workflow_id, run_id)
            except ApplicationError as exc:
                last = policy.maximum_attempts and attempt >= policy.maximum_attempts
                if exc.non_retryable or last:
                    raise
            attempt += 1
            await asyncio.sleep(delay)
            ceiling = policy.maximum_interval.total_seconds() if policy.maximum_interval else delay
            delay = min(delay * policy.backoff_coefficient, ceiling)

    async def provision(self, spec: TenantSpec) -> None:
        """record -> storage -> MIGRATING -> every service in parallel -> ACTIVE."""
        workflow_id = f"direct-{spec.id}"
        run_id = str(uuid.uuid4())

        async def step(name: str, arg: Any, opts: ActivityOptions) -> Any:
            return await self._with_retries(name, arg, opts, workflow_id, run_id)

        plan: ProvisioningPlan = await step("load_plan", PlanInput(), options.LOAD_PLAN)
        await step(
            "record_tenant",
            RecordTenantInput(
                spec=spec,
                workflow_id=workflow_id,
                run_id=run_id,
                services=plan.services,
                created_by=ACTOR,
            ),
            options.RECORD_TENANT,
        )
        location: StorageLocation = await step(
            "create_storage",
            CreateStorageInput(tenant_id=spec.id, mode=spec.storage_mode),
            options.CREATE_STORAGE,
        )
        await step(
            "transition_status",
            TransitionInput(tenant_id=spec.id, target=TenantStatus.MIGRATING),
            options.TRANSITION_STATUS,
        )
        migrate = options.migrate_service_options(plan.migration_retry)
        await asyncio.gather(
            *(
                self._migrate(
                    MigrateInput(
                        tenant_id=spec.id,
                        service=service,
                        location=location,
                        idempotency_key=f"{workflow_id}/{run_id}/{service}/0",
                        timeout=plan.migration_retry.timeout,
                        max_attempts=plan.migration_retry.max_attempts,
                    ),
                    migrate,
                    workflow_id,
                    run_id,
                )
                for service in plan.services
            )
        )
        await step(
            "transition_status",
            TransitionInput(tenant_id=spec.id, target=TenantStatus.ACTIVE),
            options.TRANSITION_STATUS,
        )


@asynccontextmanager
async def direct_provisioner(settings: Settings) -> AsyncIterator[DirectProvisioner]:
    """A provisioner over the worker's own activity resources (pools, HTTP client, caps)."""
    async with worker_activities(settings) as activities:
        yield DirectProvisioner(activities, settings.max_concurrent_migrations)
