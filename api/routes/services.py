"""Downstream service endpoints: the version spread of each service's migrations over the
non-deleted tenants, for a deploy pipeline to ask "has every tenant reached version V?" before
it ships code that needs V. They need `tenants:read` and are `GuardedRoute`s (api.guard).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Config, Reader, ServiceVersionReader
from api.errors import ServiceNotFound
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES
from infra.db.services import VersionSpread
from tenancy.models import CamelModel
from tenancy.settings import DownstreamService

services_router = APIRouter(prefix="/api/services", tags=["services"], route_class=GuardedRoute)

# Read from the settings model, so a service name is valid here exactly when it is valid there.
SERVICE_NAME_PATTERN: str = DownstreamService.model_json_schema()["properties"]["name"]["pattern"]
ServiceNamePath = Annotated[
    str, Path(pattern=SERVICE_NAME_PATTERN, description="The downstream service's name.")
]


class ServiceVersionSpread(CamelModel):
    """Where a service's migrations stand over the non-deleted tenants (every status but
    DELETED: tenants being deleted still have their storage).

    `tenants`: tenants with a record for the service. `versions`: of those, how many record
    each version (a record without a version yet is not counted here). `failed`: of those,
    how many records are FAILED (a failed rollout keeps the version applied before, so the
    tenant is also under that version). `minVersion`: the lowest recorded version, compared
    as strings by code point, so a service's versions must sort (the reference service's
    migration names `backend_0002_...` do); null when no record holds a version.
    """

    service: str
    versions: dict[str, int]
    failed: int
    min_version: str | None
    tenants: int

    @classmethod
    def of(cls, spread: VersionSpread) -> ServiceVersionSpread:
        """The answer for one service's spread."""
        return cls(
            service=spread.service,
            versions=spread.versions,
            failed=spread.failed,
            min_version=spread.min_version,
            tenants=spread.tenants,
        )


class ServiceList(CamelModel):
    """The spread of every configured service, in configuration order."""

    items: list[ServiceVersionSpread]


@services_router.get("", response_model=ServiceList, responses=AUTH_RESPONSES)
async def list_services(
    _: Reader, config: Config, service_versions: ServiceVersionReader
) -> ServiceList:
    """Every configured service with its version spread (one query for all of them)."""
    spreads = await service_versions.spread([s.name for s in config.downstream_services])
    return ServiceList(items=[ServiceVersionSpread.of(spread) for spread in spreads.values()])


@services_router.get(
    "/{name}/versions",
    response_model=ServiceVersionSpread,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "Not configured, and no non-deleted tenant has a record for it"},
    },
)
async def get_service_versions(
    _: Reader, name: ServiceNamePath, config: Config, service_versions: ServiceVersionReader
) -> ServiceVersionSpread:
    """How many non-deleted tenants are at each version of the service, how many failed, and
    the lowest version: every tenant has reached V when `failed` is 0, every tenant is in
    `versions`, and `minVersion >= V`. A service no longer configured is still answered while
    tenants have records for it."""
    spread = (await service_versions.spread([name]))[name]
    configured = any(s.name == name for s in config.downstream_services)
    if not configured and spread.tenants == 0:
        raise ServiceNotFound(f"no service {name} is configured or recorded", service=name)
    return ServiceVersionSpread.of(spread)
