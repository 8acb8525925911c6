"""Operator endpoints: drift between tenant rows, their workflows and the storage servers, and
rollouts without a run.

`GET /api/admin/reconciliation` reports and changes nothing; `POST /api/admin/reconciliation`
runs the same pass and repairs what is safe to repair, in the name of the caller (the token's
subject reaches the audit trail). Both need `tenants:write`: even a report-only pass reads
every tenant and the storage servers' catalogs. A storage server that cannot be read is listed
in the report's `unreachableServers` (the pass still answers 200); its tenants' storage is not
checked.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import Rollouts, TemporalClient, Tenants, Writer
from api.errors import InvalidRequest, ServiceUnavailable
from api.guard import GuardedRoute
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from reconciliation import Reconciler, ReconciliationReport
from reconciliation.rollouts import RolloutRule
from tenancy.settings import Settings, get_settings

PATH = "/reconciliation"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one that does not verify"},
    403: {"description": "The token lacks the scope this operation needs"},
    503: {"description": "PostgreSQL or Temporal cannot be reached"},
}


def admin_router(settings: Settings | None = None) -> APIRouter:
    """The admin routes, reading the storage servers and task queue from `settings` (the
    app's own, or the environment's when the app was built without explicit settings)."""
    router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=GuardedRoute)

    def reconciler(
        tenants: TenantRepository, rollouts: RolloutRepository, client: Client
    ) -> Reconciler:
        config = settings or get_settings()
        return Reconciler(
            tenants,
            client,
            servers=config.storage_fleet(),
            task_queue=config.task_queue,
            # The API records a move, then starts its run within its own timeout.
            settled_for=config.create_timeout * 2,
            rollouts=RolloutRule(rollouts, client, config),
        )

    @router.get(
        PATH,
        response_model=ReconciliationReport,
        responses={**_RESPONSES, 422: {"description": "A repair was asked for: POST instead"}},
        summary="Report drift between tenant rows, workflows and storage",
    )
    async def report(
        _: Writer,
        tenants: Tenants,
        rollouts: Rollouts,
        client: TemporalClient,
        repair: Annotated[bool, Query(include_in_schema=False)] = False,
    ) -> ReconciliationReport:
        """One reconciliation pass that only reports; nothing is `repaired`."""
        if repair:
            # A GET must stay safe (RFC 9110 9.2.1): a crawler or a retried link repairs nothing.
            raise InvalidRequest(
                "repairs are made by POST /api/admin/reconciliation; GET only reports",
                errors=[{"field": "repair", "message": "use POST to repair"}],
            )
        try:
            return await reconciler(tenants, rollouts, client).run(repair=False)
        except RPCError as exc:
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    @router.post(
        PATH,
        response_model=ReconciliationReport,
        responses=_RESPONSES,
        summary="Reconcile and repair: restart the workflows of tenants stuck without one",
    )
    async def repair(
        principal: Writer, tenants: Tenants, rollouts: Rollouts, client: TemporalClient
    ) -> ReconciliationReport:
        """One pass that repairs what it safely can, as the caller: drift is listed with
        `repaired` telling what was fixed, and each repair is audited with the caller."""
        try:
            return await reconciler(tenants, rollouts, client).run(
                repair=True, actor=principal.subject
            )
        except RPCError as exc:
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    return router
