"""Drains for real: tenants provisioned onto one server of a fleet (the others cordoned while
they are placed), the server's drain asked and followed through the API, and what the drain's
run left on the rows."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.polling import eventually

# One pool for every tier: a drain moves a tenant within its tier's pool.
ONE_POOL = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"}


async def server_of(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """`GET /api/storage-servers/{name}`."""
    answer = await api.get(f"/api/storage-servers/{name}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def tenant_of(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    """`GET /api/tenants/{id}`."""
    answer = await api.get(f"/api/tenants/{tenant_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def tenant_becomes(
    api: httpx.AsyncClient, tenant_id: str, status: str, timeout: float = 90
) -> dict[str, Any]:
    """The tenant once its status is `status`."""
    return await eventually(
        lambda: tenant_of(api, tenant_id), lambda t: t["status"] == status, timeout=timeout
    )


async def provision_onto(
    api: httpx.AsyncClient, server: str, others: list[str], tenant_ids: list[str]
) -> None:
    """Provision SCHEMA tenants `tenant_ids` (ACTIVE) onto `server`: the `others` are
    cordoned while they are placed, then uncordoned."""
    for other in others:
        assert (await api.post(f"/api/storage-servers/{other}/cordon")).status_code == 202
    for tenant_id in tenant_ids:
        body = {"id": tenant_id, "name": "Drained", "storageMode": "SCHEMA", "slaTier": "BASIC"}
        created = await api.post("/api/tenants", json=body)
        assert created.status_code == 202, created.text
    for tenant_id in tenant_ids:
        tenant = await tenant_becomes(api, tenant_id, "ACTIVE")
        assert tenant["storageServer"] == server
    for other in others:
        assert (await api.post(f"/api/storage-servers/{other}/uncordon")).status_code == 202


def drain_ended(server: dict[str, Any]) -> bool:
    """Whether the server's drain has ended (DRAINED, CORDONED, or its run over)."""
    drain = server.get("drain")
    return drain is not None and drain["endedAt"] is not None


async def drain_ends(api: httpx.AsyncClient, name: str, timeout: float = 180) -> dict[str, Any]:
    """The server once its drain's run has ended."""
    return await eventually(lambda: server_of(api, name), drain_ended, timeout=timeout)


def progress(server: dict[str, Any]) -> tuple[int, int, int, int]:
    """The drain's (total, moved, failed, running)."""
    drain = server["drain"]
    return drain["total"], drain["moved"], drain["failed"], drain["running"]


async def server_events(api: httpx.AsyncClient, name: str) -> list[str]:
    """The types of the server's audit events, oldest first."""
    answer = await api.get(f"/api/storage-servers/{name}/events")
    assert answer.status_code == 200, answer.text
    return [event["type"] for event in answer.json()["items"]]


def stranded_fleet(fleet_stage: Any) -> tuple[Any, str, str]:
    """Settings of two servers of one pool, `source` and `full` (room for none), over a
    metadata database of their own: a drain of `source` cannot move its tenants. Unique names:
    a drain's run id is its server's name."""
    suffix = uuid.uuid4().hex[:8]
    source, full = f"src-{suffix}", f"full-{suffix}"
    settings = fleet_stage.settings(
        (),
        [fleet_stage.server(source, 1, "shared", 10), fleet_stage.server(full, 2, "shared", 0)],
        ONE_POOL,
    )
    return settings, source, full
