"""All SQL of the version spread per downstream service: which migration version each tenant's
record holds, so that a deploy pipeline can ask whether every tenant has reached a version.

The population is every tenant except `DELETED` tombstones: a tenant whose deletion is
scheduled, running or failed still has its storage, and the service's schema in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tenancy.status import MigrationStatus, TenantStatus


@dataclass(frozen=True)
class VersionSpread:
    """One service's records over the non-deleted tenants.

    `tenants` counts the tenants with a record for the service; `versions` those whose record
    holds a version, by version (a record without one yet is in `tenants` only); `failed` those
    whose record is FAILED (a failed rollout keeps the version applied before, so such a tenant
    is in `versions` too). `min_version` is the lowest version by code point order, so versions
    must sort as strings (the reference service's `backend_0002_...` migration names do).
    """

    service: str
    versions: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    tenants: int = 0

    @property
    def min_version(self) -> str | None:
        """The lowest recorded version, or None when no record holds one."""
        return min(self.versions) if self.versions else None


class ServiceVersions:
    """Reads of the per-service migration records, aggregated in PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def spread(self, services: Sequence[str]) -> dict[str, VersionSpread]:
        """The spread of each of `services`, in that order, in one query; a service without
        records has an empty spread."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT m.service, m.version, count(*),
                       count(*) FILTER (WHERE m.status = %(failed)s)
                FROM tenant_migrations m JOIN tenants t ON t.id = m.tenant_id
                WHERE m.service = ANY(%(services)s) AND t.status <> %(deleted)s
                GROUP BY m.service, m.version
                """,
                {
                    "services": list(services),
                    "failed": MigrationStatus.FAILED.value,
                    "deleted": TenantStatus.DELETED.value,
                },
            )
            rows = await cur.fetchall()
        versions: dict[str, dict[str, int]] = {name: {} for name in services}
        failed = dict.fromkeys(services, 0)
        tenants = dict.fromkeys(services, 0)
        for service, version, count, failed_count in rows:
            if version is not None:
                versions[service][version] = int(count)
            failed[service] += int(failed_count)
            tenants[service] += int(count)
        return {
            name: VersionSpread(
                service=name,
                versions=dict(sorted(versions[name].items())),
                failed=failed[name],
                tenants=tenants[name],
            )
            for name in services
        }
