"""Operator endpoints: drift between tenant rows, their workflows and the storage server.

`GET /api/admin/reconciliation` needs `tenants:write`: even a report-only pass reads every
tenant and the storage catalog, and `?repair=true` starts workflows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from temporalio.service import RPCError

from api.deps import TemporalClient, Tenants, Writer
from api.errors import ServiceUnavailable
from reconciliation import Reconciler, ReconciliationReport
from tenancy.settings import Settings, get_settings

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one that does not verify"},
    403: {"description": "The token lacks the scope this operation needs"},
    503: {"description": "PostgreSQL or Temporal cannot be reached"},
}


def admin_router(settings: Settings | None = None) -> APIRouter:
    """The admin routes, reading the storage server and task queue from `settings` (the
    app's own, or the environment's when the app was built without explicit settings)."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])

    @router.get(
        "/reconciliation",
        response_model=ReconciliationReport,
        responses=_RESPONSES,
        summary="Report drift between tenant rows, workflows and storage",
    )
    async def reconciliation(
        _: Writer,
        tenants: Tenants,
        client: TemporalClient,
        repair: Annotated[
            bool,
            Query(description="Restart the workflows of tenants stuck without one."),
        ] = False,
    ) -> ReconciliationReport:
        """One reconciliation pass; drift is listed with `repaired` telling what was fixed."""
        config = settings or get_settings()
        reconciler = Reconciler(
            tenants,
            client,
            storage_url=config.require_storage_database_url(),
            task_queue=config.task_queue,
        )
        try:
            return await reconciler.run(repair=repair)
        except RPCError as exc:
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    return router
