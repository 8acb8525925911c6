"""The services page, `/console/services`: each configured service's version spread over the
non-deleted tenants (`GET /api/services`), one section per service, anchored by its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.internal import api_for
from api.console.web import CONSOLE, Signed, render

router = APIRouter(prefix=f"{CONSOLE}/services", include_in_schema=False)


@dataclass(frozen=True)
class Spread:
    """One service as the page shows it: versions lowest first, and the tenants whose record
    holds no version yet (counted in `tenants`, in no version)."""

    service: str
    tenants: int
    versions: list[tuple[str, int]]
    failed: int
    min_version: str | None
    without_version: int


def spread_of(item: dict[str, Any]) -> Spread:
    """The page's view of one item of `GET /api/services`."""
    # Versions compare as strings by code point, as the API's minVersion does.
    versions = sorted(item["versions"].items())
    return Spread(
        service=item["service"],
        tenants=item["tenants"],
        versions=versions,
        failed=item["failed"],
        min_version=item.get("minVersion"),
        without_version=max(0, item["tenants"] - sum(count for _, count in versions)),
    )


@router.get("")
async def services_page(request: Request, session: Signed) -> Response:
    """Every configured service with its version spread."""
    async with api_for(request, session.token) as api:
        answer = await api.get("/api/services")
    return render(
        request,
        "services.html",
        session,
        status_code=200 if answer.ok else answer.status,
        services=[spread_of(item) for item in answer.body.get("items", [])] if answer.ok else [],
        problem=None if answer.ok else answer.problem,
    )
