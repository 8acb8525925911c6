"""A tenant's location as the platform's API and its lifecycle events give it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Location:
    """Where a tenant's storage is and whether it is usable.

    `epoch` grows whenever the status or the location changes: of two answers for a tenant,
    the one with the higher epoch is the newer. `stale` is True when the API was unreachable
    and this is the last known location, served within the `stale_if_error` bound.
    """

    tenant_id: str
    status: str
    storage_mode: str
    storage_server: str | None
    jdbc_url: str | None
    epoch: int
    stale: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Location:
        """The location of the API's camelCase JSON; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"a location is a JSON object, not {type(data).__name__}")
        try:
            tenant_id, status, mode = data["tenantId"], data["status"], data["storageMode"]
            server, jdbc_url, epoch = data["storageServer"], data["jdbcUrl"], data["epoch"]
        except KeyError as exc:
            raise ValueError(f"a location lacks {exc}") from None
        if not all(isinstance(v, str) for v in (tenant_id, status, mode)):
            raise ValueError("tenantId, status and storageMode are strings")
        if not all(v is None or isinstance(v, str) for v in (server, jdbc_url)):
            raise ValueError("storageServer and jdbcUrl are strings or null")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ValueError("epoch is an integer")
        return cls(tenant_id, status, mode, server, jdbc_url, epoch)
