"""Connecting to Temporal the same way from the API, the worker and the tools.

Address, namespace, TLS client certificates and API keys come from the SDK's environment
configuration (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TLS_*`, `TEMPORAL_API_KEY`,
or a `temporal.toml` profile), so a Temporal Cloud or mTLS cluster needs no code change.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueKind, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError

from infra import search_attributes
from infra.telemetry.metrics import HISTOGRAM_BUCKETS
from tenancy.settings import Settings

_log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "127.0.0.1:7233"


async def connect_client(
    settings: Settings,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """A client with the pydantic data converter, configured from the environment.

    A worker's client is created on the worker's `runtime`, whose telemetry its workflows
    and activities then use; `interceptors` (tracing) also apply to a worker on this client.
    """
    config = ClientConfig.load_client_connect_config()
    if settings.temporal_address:
        config["target_host"] = settings.temporal_address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return await Client.connect(
        **config,
        data_converter=pydantic_data_converter,
        runtime=runtime,
        interceptors=interceptors,
    )


def worker_runtime(settings: Settings) -> Runtime:
    """The worker's SDK runtime: Core's own logs forwarded into Python logging (so they are
    structured and redacted like the rest), and a Prometheus endpoint for the SDK's and the
    platform's metrics when `settings.worker_metrics_address` is set.

    A runtime owns threads and, with metrics, a listening socket: build one per process.
    """
    metrics = (
        PrometheusConfig(
            bind_address=settings.worker_metrics_address,
            histogram_bucket_overrides=HISTOGRAM_BUCKETS,
        )
        if settings.worker_metrics_address
        else None
    )
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(
                    logger=logging.getLogger("temporalio.core"), append_target_to_name=False
                ),
            ),
            metrics=metrics,
        )
    )


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the workflow's Keyword search attributes the namespace lacks; idempotent."""
    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [
        key.name for key in search_attributes.ALL if key.name not in existing.custom_attributes
    ]
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes=dict.fromkeys(
                    missing, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                ),
            )
        )
    except RPCError as exc:
        # Temporal Cloud registers search attributes through its own control plane.
        _log.warning("could not register search attributes %s: %s", missing, exc.message)
        raise
    _log.info("registered search attributes: %s", ", ".join(missing))
    return missing


async def last_activity_poll(client: Client, task_queue: str) -> datetime | None:
    """When a worker last polled `task_queue` for activities, or None when Temporal lists no
    poller (it forgets one some minutes after its last poll)."""
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    times = [p.last_access_time.ToDatetime(tzinfo=UTC) for p in described.pollers]
    return max(times, default=None)


def exit_process(code: int) -> NoReturn:
    """End a process that used a Temporal client with `code`, skipping interpreter shutdown.

    The SDK's native runtime keeps Tokio threads that may still touch Python while a finishing
    interpreter tears itself down; then a command that finished its work dies of SIGSEGV or
    SIGABRT instead of exiting with its code (temporalio/sdk-python#300; measured here: 3 of
    40 runs of a client-only script). Output is flushed, then the process exits at once.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
