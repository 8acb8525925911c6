"""All SQL of the tenant directory: one tenant's location, and every non-deleted tenant's in
pages by id. Each is one read of `tenants` alone (its primary key), never of the migrations.

A location's `epoch` is raised by a trigger (migration 0015) with every change of the status, the
server or the jdbcUrl; lifecycle events carry the same location (`LOCATION_JSON`), read in the
transaction that writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from tenancy.models import TenantLocation
from tenancy.status import TenantStatus

# The location of the row `t` as JSON (the API's camelCase), for the lifecycle events.
LOCATION_JSON = """
    jsonb_build_object(
        'tenantId', t.id, 'status', t.status, 'storageMode', t.storage_mode,
        'storageServer', t.storage_server, 'jdbcUrl', t.jdbc_url, 'epoch', t.epoch)
"""
_LOCATION_COLUMNS = "id AS tenant_id, status, storage_mode, storage_server, jdbc_url, epoch"


@dataclass(frozen=True)
class LocationPage:
    """Up to `limit` locations by id, and the id to continue after when more are listed."""

    items: list[TenantLocation]
    next_after: str | None


class DirectoryRepository:
    """Reads of tenants' locations."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def location(self, tenant_id: str) -> TenantLocation | None:
        """The tenant's location (a DELETED tombstone's too), or None."""
        async with (
            self._pool.connection() as conn,
            conn.cursor(row_factory=class_row(TenantLocation)) as cur,
        ):
            await cur.execute(
                f"SELECT {_LOCATION_COLUMNS} FROM tenants WHERE id = %s", (tenant_id,)
            )
            found: TenantLocation | None = await cur.fetchone()
        return found

    async def page(self, *, limit: int, after: str | None = None) -> LocationPage:
        """Up to `limit` locations of tenants that are not DELETED, by id, strictly after
        `after`. A tenant created meanwhile with a smaller id is not listed: its events are
        after the listing's position in the event stream, which is what a client follows."""
        async with (
            self._pool.connection() as conn,
            conn.cursor(row_factory=class_row(TenantLocation)) as cur,
        ):
            await cur.execute(
                f"""
                SELECT {_LOCATION_COLUMNS} FROM tenants
                WHERE status <> %(deleted)s AND (%(after)s::text IS NULL OR id > %(after)s)
                ORDER BY id LIMIT %(limit)s
                """,
                {"deleted": TenantStatus.DELETED.value, "after": after, "limit": limit + 1},
            )
            rows: list[TenantLocation] = await cur.fetchall()
        shown = rows[:limit]
        return LocationPage(
            items=shown, next_after=shown[-1].tenant_id if len(rows) > limit else None
        )
