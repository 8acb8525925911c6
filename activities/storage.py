"""Activity that creates a tenant's schema or database and records its JDBC URL."""

from __future__ import annotations

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType, summarize
from tenancy.models import StorageLocation
from tenancy.repository import TenantRepository
from tenancy.storage import PERMANENT_STORAGE_ERRORS, StorageAdmin


class StorageActivities:
    """Bound to the storage server's admin pool and the metadata repository."""

    def __init__(self, admin: StorageAdmin, tenants: TenantRepository) -> None:
        self._admin = admin
        self._tenants = tenants

    @activity.defn(name="create_storage")
    async def create_storage(self, request: CreateStorageInput) -> StorageLocation:
        """Create the storage unless it exists, then record its `jdbcUrl`."""
        try:
            location = await self._admin.ensure(request.tenant_id, request.mode)
        except PERMANENT_STORAGE_ERRORS as exc:
            raise ApplicationError(
                f"storage server refused: {summarize(str(exc))}",
                type=FailureType.STORAGE_FORBIDDEN,
                non_retryable=True,
            ) from None
        except psycopg.Error as exc:
            # Connection loss, a busy template database, a lock timeout: worth another try.
            raise ApplicationError(
                f"storage creation failed: {summarize(str(exc))}",
                type=FailureType.STORAGE_FAILED,
            ) from None
        await self._tenants.set_jdbc_url(request.tenant_id, location.jdbc_url)
        return location
