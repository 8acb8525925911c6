"""The tenant directory as a service uses it in tests: tenants seeded straight into the metadata
database, the listing walked page by page, and the lifecycle stream followed from a position."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from api.auth import DIRECTORY_SCOPE
from infra.db.repository import TenantRepository
from infra.events.nats import STREAM, declare_events_stream, stream_config
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tests.support.api_client import token_of


async def seed_tenant(tenants: TenantRepository, tenant_id: str) -> None:
    """A tenant row in PROVISIONING (no workflow behind it), with its CREATED event."""
    spec = TenantSpec(
        id=tenant_id, name="Directory", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    await tenants.insert(spec, provision_workflow_id(tenant_id), f"run-{tenant_id}", [])


def directory_headers(keys_dir: Path, *scopes: str) -> dict[str, str]:
    """The Authorization header of a service's token (directory:read only, unless given)."""
    token = token_of(keys_dir, "directory-client", *(scopes or (DIRECTORY_SCOPE,)))
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Listing:
    """What walking the listing gave: every page's body, and the locations by tenant id."""

    pages: list[dict[str, Any]] = field(default_factory=list)
    locations: dict[str, dict[str, Any]] = field(default_factory=dict)


async def walk_locations(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    limit: int,
    between_pages: Callable[[Listing], Awaitable[None]] | None = None,
) -> Listing:
    """Every page of /api/tenant-locations; `between_pages` runs after each page but the last,
    with what was listed so far."""
    listing = Listing()
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        answer = await http.get("/api/tenant-locations", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        listing.pages.append(page)
        for item in page["items"]:
            listing.locations[item["tenantId"]] = item
        cursor = page["nextCursor"]
        if cursor is None:
            return listing
        if between_pages is not None:
            await between_pages(listing)


@dataclass
class Follower:
    """The lifecycle events of a stream position on, applied to a directory by epoch."""

    directory: dict[str, dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, event: dict[str, Any]) -> None:
        """Keep the event's location unless the directory holds a newer one."""
        self.events.append(event)
        location = event["data"]["location"]
        held = self.directory.get(location["tenantId"])
        if held is None or held["epoch"] <= location["epoch"]:
            self.directory[location["tenantId"]] = location


@asynccontextmanager
async def following(
    url: str, sequence: int, directory: dict[str, dict[str, Any]]
) -> AsyncIterator[Follower]:
    """An ordered consumer of `platform.tenants.>` from `sequence + 1`, applying each event."""
    follower = Follower(directory)

    async def on_message(msg: Msg) -> None:
        follower.apply(json.loads(msg.data))

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await declare_events_stream(js, stream_config())
        sub = await js.subscribe(
            "platform.tenants.>",
            stream=STREAM,
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence + 1
            ),
        )
        yield follower
        await sub.unsubscribe()
    finally:
        await nc.close()
