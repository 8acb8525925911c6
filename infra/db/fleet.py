"""The worker's connections to every storage server: one `StorageAdmin` (and pool) per server.

Pools open in the background, so a server that is down when the worker starts delays nothing
but the steps that need it: those fail their attempt after `connect_wait` and are retried
(the reason names the server).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from infra.db.servers import ServerRepository, UnknownServer
from infra.db.storage import StorageAdmin
from tenancy.fleet import StorageServer
from tenancy.models import StorageLocation, StorageMode


@dataclass(frozen=True)
class TenantStorage:
    """A tenant's storage: the server it is on, its admin there and the location."""

    server: str
    admin: StorageAdmin
    location: StorageLocation


class StorageFleet:
    """Every configured storage server's admin, by name, in configuration order."""

    def __init__(
        self,
        admins: Mapping[StorageServer, StorageAdmin],
        placements: ServerRepository,
        pools: Sequence[AsyncConnectionPool[Any]] = (),
    ) -> None:
        """Over `admins` in configuration order; `pools` are opened and closed with the fleet
        (none when the caller owns them, as tests that stage servers do)."""
        self.servers = tuple(admins)
        self._admins = {server.name: admin for server, admin in admins.items()}
        self._placements = placements
        self._pools = tuple(pools)
        self._stack = AsyncExitStack()

    @classmethod
    def connect(
        cls,
        servers: Sequence[StorageServer],
        service_roles: Sequence[str],
        placements: ServerRepository,
        *,
        max_connections: int,
        connect_wait: timedelta,
    ) -> StorageFleet:
        """A fleet with a pool of its own per server, opened with it."""
        admins: dict[StorageServer, StorageAdmin] = {}
        pools: list[AsyncConnectionPool[Any]] = []
        for server in servers:
            # CREATE DATABASE cannot run inside a transaction block: autocommit.
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                server.dsn,
                open=False,
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True},
                # A server that is down fails an attempt (retried, and shown in the tenant's
                # statusReason) after this wait for a connection, not the pool's default 30 s.
                timeout=connect_wait.total_seconds(),
                name=f"storage-{server.name}",
            )
            pools.append(pool)
            admins[server] = StorageAdmin(pool, server.dsn, service_roles)
        return cls(admins, placements, pools)

    async def __aenter__(self) -> StorageFleet:
        async with AsyncExitStack() as stack:
            for pool in self._pools:
                await stack.enter_async_context(pool)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def server(self, name: str) -> StorageServer:
        """The configured server `name`; `UnknownServer` if the configuration lacks it."""
        for server in self.servers:
            if server.name == name:
                return server
        raise UnknownServer(f"storage server {name!r} is not in PLATFORM_STORAGE_SERVERS")

    def admin(self, name: str) -> StorageAdmin:
        """The admin of server `name`; `UnknownServer` if the configuration lacks it."""
        try:
            return self._admins[name]
        except KeyError:
            raise UnknownServer(
                f"storage server {name!r} is not in PLATFORM_STORAGE_SERVERS"
            ) from None

    def locate(self, name: str, tenant_id: str, mode: StorageMode) -> StorageLocation:
        """Where a tenant's storage is on server `name`."""
        return self.admin(name).locate(tenant_id, mode)

    async def of_tenant(self, tenant_id: str, mode: StorageMode) -> TenantStorage | None:
        """Where the tenant's storage is, by the server its row names; None when it was never
        placed (so it has no storage anywhere). `UnknownServer` if the configuration lacks
        the row's server."""
        name = await self._placements.server_of(tenant_id)
        if name is None:
            return None
        admin = self.admin(name)
        return TenantStorage(name, admin, admin.locate(tenant_id, mode))
