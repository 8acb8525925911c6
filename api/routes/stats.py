"""Fleet figures for dashboards: how many tenants are in each status (the console's overview
and tenant list show them). `tenants:read`; a `GuardedRoute` (api.guard)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Reader, Tenants
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES
from tenancy.models import CamelModel

stats_router = APIRouter(prefix="/api/stats", tags=["tenants"], route_class=GuardedRoute)


class TenantCounts(CamelModel):
    """Tenants by status, every status present (zero included); `total` leaves out DELETED
    tombstones, as the tenant list does."""

    by_status: dict[str, int]
    total: int


@stats_router.get("/tenants", response_model=TenantCounts, responses=AUTH_RESPONSES)
async def tenant_counts(_: Reader, tenants: Tenants) -> TenantCounts:
    """How many tenants are in each status."""
    counts = {status.value: count for status, count in (await tenants.count_by_status()).items()}
    return TenantCounts(
        by_status=counts,
        total=sum(count for status, count in counts.items() if status != "DELETED"),
    )
