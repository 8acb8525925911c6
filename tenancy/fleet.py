"""The fleet of storage servers tenants are placed on, and the placement rule itself.

A server belongs to one pool; `PLATFORM_PLACEMENT` maps each SLA tier to a pool. A new tenant is
placed, before its storage is created, on the server of its tier's pool that is `ACTIVE`, takes
its storage mode and has room, with the fewest tenants (ties by name). The choice is pure here
(`choose_server`); `infra.db.servers` makes it under locks, so concurrent placements never put
more than `maxTenants` on a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PostgresDsn
from pydantic.alias_generators import to_camel

from tenancy.dsn import check_tcp_dsn
from tenancy.models import SlaTier, StorageMode

SERVER_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,39}$"
POOL_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
# The server an installation without PLATFORM_STORAGE_SERVERS has: the storage database URL's.
DEFAULT_SERVER = "default"
DEFAULT_POOL = "default"


class ServerState(StrEnum):
    """Whether a server takes new tenants: only an ACTIVE one does. A cordoned one keeps
    serving its own; a DRAINING one has its tenants moved off (`DrainServerWorkflow`); a
    DRAINED one holds none (every tenant but DELETED ones moved off) and may leave the
    settings."""

    ACTIVE = "ACTIVE"
    CORDONED = "CORDONED"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"


class ServerEventType(StrEnum):
    """What a storage server's audit event records."""

    CORDONED = "CORDONED"
    UNCORDONED = "UNCORDONED"
    DRAIN_STARTED = "DRAIN_STARTED"
    DRAIN_CANCELLED = "DRAIN_CANCELLED"
    # The drain's run ended with tenants left on the server (it stays DRAINING).
    DRAIN_STOPPED = "DRAIN_STOPPED"
    DRAINED = "DRAINED"


def _check_dsn(value: object) -> object:
    if isinstance(value, str):
        return check_tcp_dsn(value, "the url of each PLATFORM_STORAGE_SERVERS entry")
    return value


class StorageServer(BaseModel):
    """One entry of `PLATFORM_STORAGE_SERVERS`: where schemas are created (`url`'s database)
    and from which tenant databases are created, with the platform's admin role."""

    # A refused url may carry a password: errors name the field, never the value.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        use_attribute_docstrings=True,
    )

    name: str = Field(pattern=SERVER_NAME_PATTERN)
    """The server's name, unique in the list: how tenants (their `storageServer`) refer to it."""
    url: Annotated[PostgresDsn, BeforeValidator(_check_dsn)]
    """The platform role's admin URL: SCHEMA tenants' schemas are created in its database,
    DATABASE tenants' databases on its server. One TCP host and port, as the storage database
    URL; a jdbcUrl names them."""
    pool: str = Field(default=DEFAULT_POOL, pattern=POOL_NAME_PATTERN)
    """The pool it belongs to; `PLATFORM_PLACEMENT` maps each SLA tier to a pool."""
    max_tenants: int = Field(ge=0, le=10_000_000)
    """How many tenants it may hold, in every status but DELETED; placement never puts more on
    it."""
    storage_modes: tuple[StorageMode, ...] = Field(
        default=(StorageMode.SCHEMA, StorageMode.DATABASE), min_length=1
    )
    """The storage modes of the tenants it takes (at least one)."""

    @property
    def dsn(self) -> str:
        """The admin URL as a string."""
        return str(self.url)

    def takes(self, mode: StorageMode) -> bool:
        """Whether tenants of `mode` may be placed here."""
        return mode in self.storage_modes


@dataclass(frozen=True)
class ServerLoad:
    """A server's state and how many tenants (every status but DELETED) it holds."""

    state: ServerState
    tenants: int


def candidates(
    servers: Sequence[StorageServer], pool: str, mode: StorageMode
) -> list[StorageServer]:
    """The servers of `pool` that take `mode`, in configuration order."""
    return [s for s in servers if s.pool == pool and s.takes(mode)]


_IDLE = ServerLoad(ServerState.ACTIVE, 0)


def unavailable(server: StorageServer, load: ServerLoad) -> str | None:
    """Why `server` may take no tenant now (not ACTIVE, no room), or None when it may: the
    rule placement and a move's target share."""
    if load.state is not ServerState.ACTIVE:
        return f"storage server {server.name} is {load.state.value}"
    if load.tenants >= server.max_tenants:
        return f"storage server {server.name} has no room ({load.tenants} of {server.max_tenants})"
    return None


def choose_server(
    servers: Sequence[StorageServer], loads: Mapping[str, ServerLoad]
) -> StorageServer | None:
    """Among `servers` (one pool's, taking the tenant's mode): the ACTIVE one with room and
    the fewest tenants, ties by name; None when none has room. A server without a load
    entry holds no tenant and is ACTIVE."""
    best: tuple[int, str, StorageServer] | None = None
    for server in servers:
        load = loads.get(server.name, _IDLE)
        if unavailable(server, load) is not None:
            continue
        key = (load.tenants, server.name, server)
        if best is None or key[:2] < best[:2]:
            best = key
    return None if best is None else best[2]


def no_room_reason(pool: str, tier: SlaTier, mode: StorageMode) -> str:
    """The statusReason of a tenant no server could take (the contract's wording)."""
    return f'no storage server with room in pool "{pool}" for {tier.value} {mode.value} tenants'


def tiers_of(placement: Mapping[SlaTier, str], pool: str) -> list[SlaTier]:
    """The tiers placed into `pool`, in tier order."""
    return [tier for tier in SlaTier if placement.get(tier) == pool]
