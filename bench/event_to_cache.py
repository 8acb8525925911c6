"""Event to cache: how long after a status change commits a directory client following the
lifecycle events (NATS) answers the new value.

For each change (an ACTIVE tenant's deletion scheduled, then restored: two status changes) the
start is the commit's own time, the audit event's `occurredAt` (written in the transaction of
the change, by the database's clock on this machine), and the end is the moment the client's
cache holds the new epoch (looked at every half millisecond: `peek`, no request). The path in
between is the whole product: outbox row, relay woken by the commit, JetStream, the client's
ordered consumer, the epoch rule.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from tenant_directory import TenantDirectory

# How often the watcher looks at the cache.
LOOK_EVERY = 0.0005


@dataclass(frozen=True)
class EventToCache:
    """Milliseconds from each change's commit to the client's cache holding it."""

    latencies_ms: list[float]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]


async def _seen(directory: TenantDirectory, tenant_id: str, epoch: int, timeout: float) -> float:
    """Wall-clock time at which the cache first holds `epoch` or newer for the tenant."""
    deadline = time.monotonic() + timeout
    while True:
        location = directory.peek(tenant_id)
        if location is not None and location.epoch >= epoch:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cache never showed epoch {epoch} of {tenant_id}")
        await asyncio.sleep(LOOK_EVERY)


async def _committed_at(api: httpx.AsyncClient, tenant_id: str, status: str) -> float:
    """When the tenant's latest change to `status` committed (its audit event's time)."""
    events = (await api.get(f"/api/tenants/{tenant_id}/events")).json()["items"]
    last = [e for e in events if e.get("newStatus") == status][-1]
    return datetime.fromisoformat(last["occurredAt"]).timestamp()


async def measure(
    api_url: str,
    operator_token: str,
    directory_token: str,
    events_url: str,
    tenant_ids: list[str],
    rounds: int,
) -> EventToCache:
    """`rounds` deletions-then-restores over `tenant_ids` (ACTIVE), one change at a time."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {operator_token}"}
    async with (
        httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api,
        TenantDirectory(api_url, directory_token, events_url=events_url) as directory,
    ):
        for tenant_id in tenant_ids:
            await directory.get(tenant_id)
        for n in range(rounds):
            tenant_id = tenant_ids[n % len(tenant_ids)]
            path = f"/api/tenants/{tenant_id}"
            for method, url, params, status in (
                ("DELETE", path, {"graceSeconds": 3600}, "DELETION_SCHEDULED"),
                ("POST", f"{path}/restore", None, "ACTIVE"),
            ):
                before = directory.peek(tenant_id)
                assert before is not None
                watcher = asyncio.create_task(_seen(directory, tenant_id, before.epoch + 1, 30))
                (await api.request(method, url, params=params)).raise_for_status()
                seen = await watcher
                latencies.append((seen - await _committed_at(api, tenant_id, status)) * 1000)
    return EventToCache(latencies)
