"""What `TenantDirectory.get` raises:

    DirectoryError                 the directory cannot give this answer
    ├── TenantNotFound             the API answered 404: no such tenant (or no longer)
    └── DirectoryUnavailable       the API is unreachable and nothing recent enough is cached

A `DirectoryError` itself means the API refused the call (401/403: the token, or another
unexpected status): serving a cached entry would hide a configuration error.
"""

from __future__ import annotations


class DirectoryError(Exception):
    """The directory cannot answer for this tenant."""


class TenantNotFound(DirectoryError):
    """The platform has no such tenant."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} not found")
        self.tenant_id = tenant_id


class DirectoryUnavailable(DirectoryError):
    """The API is unreachable (connection error, timeout, 5xx) and the cache has no entry for
    the tenant confirmed within `max_age + stale_if_error`."""
