"""The platform's tenant directory for services: where a tenant's storage is, from a local
cache that is never stale for long. See `TenantDirectory`."""

from tenant_directory.directory import Stats, TenantDirectory
from tenant_directory.errors import DirectoryError, DirectoryUnavailable, TenantNotFound
from tenant_directory.location import Location

__all__ = [
    "DirectoryError",
    "DirectoryUnavailable",
    "Location",
    "Stats",
    "TenantDirectory",
    "TenantNotFound",
]
