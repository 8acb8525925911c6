"""Drift between tenant rows, their workflows and the real storage; safe repairs only.

Storage is inventoried on every configured storage server: a tenant's schema or database is
looked for on the server its row names (a tenant never placed has none), and a `tenant_*`
schema or database on a server where no row places it is that server's orphan. A server whose
catalog cannot be read is listed in `unreachableServers`, and nothing is concluded about the
storage of its tenants (never `STORAGE_MISSING`).

Kinds of drift:

- `STORAGE_MISSING`: a row whose schema or database does not exist on its server, for a tenant
  past PROVISIONING (or in PROVISIONING with its `jdbcUrl` already recorded).
- `ORPHAN_STORAGE`: a `tenant_*` schema or database that no row of that storage mode places on
  that server (databases: on that PostgreSQL instance); a MOVING tenant's target and a move's
  source kept until it is dropped (`retained_storage`) are placed there too.
- `STUCK_WITHOUT_WORKFLOW`: a tenant in a status that needs an open run of its workflow
  (`reconciliation.rules`: PROVISIONING, MIGRATING or MIGRATION_ERROR for provisioning, MOVING
  for the move) whose
  workflow is not running, so nothing will ever move it (or receive its retry signal).
- `STATUS_MISMATCH`: the row's status differs from the running workflow's `get_status`, from
  its `TenantStatus` search attribute, or the workflow completed while the row is in a status
  that workflow never completes in (provisioning completes only ACTIVE).
- `FAILED_TENANT_STORAGE`: a tenant in PROVISION_ERROR whose schema or database exists
  (left in place: retry-provisioning reuses it, deletion removes it).
- `STORAGE_NOT_DROPPED`: a DELETED tenant whose schema or database still exists (left in place:
  an operator decides; a deletion that drops it again would need a new request).
- `UNPOLLED_QUEUE`: an open run's call waits on a task queue no worker polls
  (`reconciliation.queues`; report only, the repair is a deploy).
- `ROLLOUT_WITHOUT_RUN`: a rollout (`rolloutId`, no `tenantId`) whose row is RUNNING, PAUSED or
  HALTED while no run of its workflow is open (`reconciliation.rollouts`); the repair starts a
  run that goes on from its rows.
- `ROLLOUT_RUN_AFTER_END`: a rollout that ended (SUCCEEDED, FAILED, CANCELLED) while a run of it
  is still open (left running: an operator terminates it).

Each workflow type has its rules (`reconciliation.rules`); a tenant's status picks the rules it
is checked against. The only repair is restarting the workflow of a stuck tenant in a status its
rules call restartable (provisioning: PROVISIONING or MIGRATING; the deletion statuses; MOVING): a
new run takes the tenant over from the closed one (for provisioning the same path as the API's
retries, with the operator who asked in the audit trail; a deletion or a move run reads where it
stands from the row), and every step is idempotent, so it finishes what the old run left. Nothing
is ever deleted or rewritten: orphans, missing storage and mismatches need an operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import structlog
from pydantic import Field
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from infra import search_attributes as sa
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutMissing
from reconciliation.inventory import FleetInventory, read_fleet
from reconciliation.queues import CALLING_STATUSES, QueueWatch
from reconciliation.rollouts import RolloutRule
from reconciliation.rules import ALL_RULES, WorkflowRules, rules_for
from tenancy.fleet import StorageServer
from tenancy.models import CamelModel, StorageMode, Tenant
from tenancy.naming import STORAGE_PREFIX, storage_name
from tenancy.status import DELETION_STATUSES, TenantStatus

_log = structlog.stdlib.get_logger("platform.reconciliation")

_QUERY_TIMEOUT = timedelta(seconds=2)
_PARALLEL_DESCRIBES = 16


class DriftKind(StrEnum):
    """What disagrees (see the module docstring)."""

    STORAGE_MISSING = "STORAGE_MISSING"
    ORPHAN_STORAGE = "ORPHAN_STORAGE"
    STUCK_WITHOUT_WORKFLOW = "STUCK_WITHOUT_WORKFLOW"
    STATUS_MISMATCH = "STATUS_MISMATCH"
    FAILED_TENANT_STORAGE = "FAILED_TENANT_STORAGE"
    STORAGE_NOT_DROPPED = "STORAGE_NOT_DROPPED"
    UNPOLLED_QUEUE = "UNPOLLED_QUEUE"
    ROLLOUT_WITHOUT_RUN = "ROLLOUT_WITHOUT_RUN"
    ROLLOUT_RUN_AFTER_END = "ROLLOUT_RUN_AFTER_END"


class Drift(CamelModel):
    """One disagreement, and whether this run repaired it."""

    kind: DriftKind
    # The tenant the drift is about; null for a rollout's drift, which names `rolloutId`.
    tenant_id: str | None = None
    rollout_id: str | None = None
    # The storage server a storage drift is on; null for the other kinds.
    server: str | None = None
    detail: str
    repaired: bool = False


class UnreachableServer(CamelModel):
    """A storage server whose catalog could not be read: its tenants' storage was not checked."""

    server: str
    error: str


class ReconciliationReport(CamelModel):
    """Everything found in one pass; no drift (and no unreachable server) means rows,
    workflows and storage agree."""

    drift: list[Drift]
    unreachable_servers: list[UnreachableServer] = Field(default_factory=list)
    checked_at: datetime


@dataclass(frozen=True)
class WorkflowView:
    """What Temporal says about a tenant's workflow (its latest run)."""

    status: WorkflowExecutionStatus | None
    search_status: str | None = None
    live_status: TenantStatus | None = None

    @property
    def running(self) -> bool:
        """True while the run can still act (and answer queries, with a worker)."""
        return self.status is WorkflowExecutionStatus.RUNNING

    def describe(self) -> str:
        """The run's status for a report line."""
        return "not found" if self.status is None else self.status.name.lower()


_NOT_FOUND = WorkflowView(status=None)


class Reconciler:
    """Compares rows (optionally only ids starting with `id_prefix`), workflows and the
    storage on every server of `servers` (`Settings.storage_fleet()`). A run that the row's
    writer starts after the row (a move's) is restarted only once the row asked for it
    `settled_for` ago (twice PLATFORM_CREATE_TIMEOUT from the API and the command line)."""

    def __init__(
        self,
        tenants: TenantRepository,
        client: Client,
        *,
        servers: Sequence[StorageServer],
        task_queue: str,
        id_prefix: str = "",
        rules: tuple[WorkflowRules, ...] = ALL_RULES,
        rollouts: RolloutRule | None = None,
        settled_for: timedelta = timedelta(0),
    ) -> None:
        self._rules = rules
        self._settled_for = settled_for
        self._rollout_rule = rollouts
        self._tenants = tenants
        self._client = client
        self._servers = tuple(servers)
        # Databases are server-wide: two entries on one PostgreSQL instance list the same ones.
        self._instances = {s.name: _instance(s) for s in self._servers}
        self._task_queue = task_queue
        self._id_prefix = id_prefix

    async def run(self, *, repair: bool = False, actor: str | None = None) -> ReconciliationReport:
        """One pass; with `repair`, restart the workflows of stuck tenants, in the audit trail
        as `reconciler:<actor>`."""
        checked_at = datetime.now(UTC)
        rows = await self._tenants.all_with_prefix(self._id_prefix)
        storage = await read_fleet(self._servers, self._id_prefix)
        for name, error in storage.unreachable.items():
            _log.warning("storage server unreachable", server=name, error=error)
        limit = asyncio.Semaphore(_PARALLEL_DESCRIBES)
        listed = await self._listed()
        suspects = [t for t in rows if self._suspect(t, listed.get(self._workflow_id(t)))]
        confirmed = await asyncio.gather(*(self._confirm(t, limit) for t in suspects))
        views = {t.id: v for t, v in zip(suspects, confirmed, strict=True)}
        drift = self._orphans(rows, storage, await self._tenants.retained_storage(self._id_prefix))
        calling = []
        for tenant in rows:
            drift.extend(self._storage_drift(tenant, storage))
            seen = views.get(tenant.id) or listed.get(self._workflow_id(tenant)) or _NOT_FOUND
            found = self._workflow_drift(tenant, seen)
            if found is not None and repair and found.kind is DriftKind.STUCK_WITHOUT_WORKFLOW:
                found.repaired = await self._restart(tenant, actor)
            if found is not None:
                drift.append(found)
            if seen.running and tenant.status in CALLING_STATUSES:
                calling.append(tenant)
        drift.extend(await self._unpolled_calls(calling, limit, checked_at))
        drift.extend(await self._rollout_drift(repair=repair, actor=actor))
        for item in drift:
            _log.warning(
                "drift",
                kind=item.kind.value,
                tenant_id=item.tenant_id,
                rollout_id=item.rollout_id,
                server=item.server,
                detail=item.detail,
                repaired=item.repaired,
            )
        unreachable = [
            UnreachableServer(server=name, error=error)
            for name, error in storage.unreachable.items()
        ]
        return ReconciliationReport(
            drift=drift, unreachable_servers=unreachable, checked_at=checked_at
        )

    async def _rollout_drift(self, *, repair: bool, actor: str | None) -> list[Drift]:
        """Rollouts without an open run; with `repair`, each is resumed from its rows."""
        if self._rollout_rule is None:
            return []
        found = []
        for stuck in await self._rollout_rule.without_run():
            item = Drift(
                kind=DriftKind.ROLLOUT_WITHOUT_RUN, rollout_id=stuck.rollout_id, detail=stuck.detail
            )
            if repair:
                who = f"reconciler:{actor}" if actor else "reconciler"
                try:
                    item.repaired = await self._rollout_rule.resume(stuck, who)
                except (ValueError, RolloutMissing, RPCError) as exc:
                    # A row a run cannot be rebuilt from is reported, and the pass goes on.
                    item.detail = f"{item.detail}; not resumed: {exc}"
                    _log.warning("rollout not resumed", rollout_id=stuck.rollout_id, error=str(exc))
            found.append(item)
        found.extend(
            Drift(
                kind=DriftKind.ROLLOUT_RUN_AFTER_END,
                rollout_id=extra.rollout_id,
                detail=extra.detail,
            )
            for extra in await self._rollout_rule.runs_after_end()
        )
        return found

    def _rules_of(self, tenant: Tenant) -> WorkflowRules:
        return rules_for(tenant.status, self._rules)

    def _workflow_id(self, tenant: Tenant) -> str:
        return self._rules_of(tenant).workflow_id(tenant.id)

    @staticmethod
    def _expected_storage(tenant: Tenant) -> tuple[str, str]:
        kind = "schema" if tenant.storage_mode is StorageMode.SCHEMA else "database"
        return kind, storage_name(tenant.id)

    def _storage_drift(self, tenant: Tenant, storage: FleetInventory) -> list[Drift]:
        server = tenant.storage_server
        # Never placed: no storage anywhere. On a server not read (unreachable, or a DELETED
        # tenant's server gone from the list): nothing is known, so nothing is reported.
        snapshot = None if server is None else storage.snapshots.get(server)
        if server is None or snapshot is None:
            return []
        kind, name = self._expected_storage(tenant)
        present = name in (snapshot.schemas if kind == "schema" else snapshot.databases)
        where = f"{kind} {name} on server {server}"

        def drift(of: DriftKind, detail: str) -> list[Drift]:
            return [Drift(kind=of, tenant_id=tenant.id, server=server, detail=detail)]

        if tenant.status is TenantStatus.DELETED:
            if not present:
                return []
            return drift(
                DriftKind.STORAGE_NOT_DROPPED, f"{where} exists, tenant is DELETED (left in place)"
            )
        if tenant.status in DELETION_STATUSES and (
            tenant.status is not TenantStatus.DELETION_SCHEDULED or tenant.jdbc_url is None
        ):
            # The purge drops it; before the purge only storage that was created must exist.
            return []
        if tenant.status is TenantStatus.PROVISION_ERROR:
            if not present:
                return []
            return drift(
                DriftKind.FAILED_TENANT_STORAGE,
                f"{where} exists, tenant is PROVISION_ERROR (left in place)",
            )
        expected = tenant.status is not TenantStatus.PROVISIONING or tenant.jdbc_url is not None
        if present or not expected:
            return []
        return drift(
            DriftKind.STORAGE_MISSING, f"{where} does not exist, tenant is {tenant.status.value}"
        )

    def _orphans(
        self,
        rows: list[Tenant],
        storage: FleetInventory,
        retained: Sequence[tuple[str, str]] = (),
    ) -> list[Drift]:
        """Storage on each server (in configuration order) that no row places there, but a
        move's target (while MOVING) and a move's source kept until it is dropped."""
        by_id = {t.id: t for t in rows}
        held = [(t, t.storage_server) for t in rows]
        held += [(t, t.move.to_server) for t in rows if t.move is not None]
        held += [(by_id[tenant_id], server) for tenant_id, server in retained if tenant_id in by_id]
        owned = {
            self._owner_key(server, *self._expected_storage(tenant))
            for tenant, server in held
            if server is not None
        }
        found: list[Drift] = []
        listed: set[tuple[str, str, str]] = set()
        for server in self._servers:
            snapshot = storage.snapshots.get(server.name)
            if snapshot is None:
                continue
            for kind, names in (("schema", snapshot.schemas), ("database", snapshot.databases)):
                for name in sorted(names):
                    key = self._owner_key(server.name, kind, name)
                    # A database listed by two entries on one instance is reported once.
                    if key in owned or key in listed:
                        continue
                    listed.add(key)
                    found.append(self._orphan(server.name, kind, name, by_id))
        return found

    def _owner_key(self, server: str, kind: str, name: str) -> tuple[str, str, str]:
        """What owns storage: a schema its server, a database its PostgreSQL instance."""
        return (kind, self._instances.get(server, server) if kind == "database" else server, name)

    def _orphan(self, server: str, kind: str, name: str, rows: dict[str, Tenant]) -> Drift:
        tenant_id = name.removeprefix(STORAGE_PREFIX)
        row = rows.get(tenant_id)
        if row is None:
            why = "has no tenant row"
        elif row.storage_server is None:
            why = "is not its tenant's storage: the tenant was never placed"
        elif self._owner_key(row.storage_server, kind, name) != self._owner_key(server, kind, name):
            why = f"is not its tenant's storage: the tenant is on server {row.storage_server}"
        else:
            why = f"is not its tenant's storage: the tenant is a {row.storage_mode.value} tenant"
        return Drift(
            kind=DriftKind.ORPHAN_STORAGE,
            tenant_id=tenant_id,
            server=server,
            detail=f"{kind} {name} on server {server} {why} (left in place)",
        )

    def _workflow_drift(self, tenant: Tenant, seen: WorkflowView) -> Drift | None:
        row = tenant.status
        rules = self._rules_of(tenant)
        if row in rules.needs_run and not seen.running:
            return Drift(
                kind=DriftKind.STUCK_WITHOUT_WORKFLOW,
                tenant_id=tenant.id,
                detail=f"tenant is {row.value}, its workflow is {seen.describe()}",
            )
        reasons = []
        if seen.running and seen.live_status is not None and seen.live_status is not row:
            reasons.append(f"workflow reports {seen.live_status.value}")
        if seen.search_status is not None and seen.search_status != row.value:
            reasons.append(f"TenantStatus search attribute is {seen.search_status}")
        if seen.status is WorkflowExecutionStatus.COMPLETED and row not in rules.completes_in:
            done = ", ".join(sorted(status.value for status in rules.completes_in))
            reasons.append(f"workflow completed (it does only once {done})")
        if not reasons:
            return None
        return Drift(
            kind=DriftKind.STATUS_MISMATCH,
            tenant_id=tenant.id,
            detail=f"row is {row.value}; " + "; ".join(reasons),
        )

    async def _listed(self) -> dict[str, WorkflowView]:
        """The latest run of every workflow the rules know, one visibility listing per type
        (cheap, but eventually consistent: anything that looks wrong is confirmed by
        `_confirm`)."""
        latest: dict[str, tuple[datetime, WorkflowView]] = {}
        for rules in self._rules:
            await self._list_type(rules, latest)
        return {key: view for key, (_, view) in latest.items()}

    async def _list_type(
        self, rules: WorkflowRules, latest: dict[str, tuple[datetime, WorkflowView]]
    ) -> None:
        prefix = rules.workflow_id(self._id_prefix) if self._id_prefix else ""
        query = f"WorkflowType = '{rules.workflow_type}'"
        async for execution in self._client.list_workflows(query):
            if not execution.id.startswith(prefix):
                continue
            previous = latest.get(execution.id)
            if previous is None or execution.start_time > previous[0]:
                view = WorkflowView(
                    status=execution.status,
                    search_status=execution.typed_search_attributes.get(sa.TENANT_STATUS),
                )
                latest[execution.id] = (execution.start_time, view)

    def _suspect(self, tenant: Tenant, listed: WorkflowView | None) -> bool:
        rules = self._rules_of(tenant)
        if listed is None:
            return tenant.status in rules.needs_run
        # A running workflow whose row is already settled is worth asking for its live state.
        return self._workflow_drift(tenant, listed) is not None or (
            listed.running and tenant.status in rules.settled
        )

    async def _confirm(self, tenant: Tenant, limit: asyncio.Semaphore) -> WorkflowView:
        async with limit:
            return await self._workflow(tenant)

    async def _workflow(self, tenant: Tenant) -> WorkflowView:
        rules = self._rules_of(tenant)
        handle = self._client.get_workflow_handle(rules.workflow_id(tenant.id))
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return WorkflowView(status=None)
            raise
        search_status = description.typed_search_attributes.get(sa.TENANT_STATUS)
        live: TenantStatus | None = None
        if description.status is WorkflowExecutionStatus.RUNNING:
            try:
                state = await handle.query(
                    rules.status_query, result_type=rules.state_type, rpc_timeout=_QUERY_TIMEOUT
                )
                live = state.status
            except (RPCError, WorkflowQueryFailedError) as exc:
                # No worker polling (or an old run): the search attribute still speaks.
                _log.info("status query unanswered", tenant_id=tenant.id, error=str(exc))
        return WorkflowView(
            status=description.status, search_status=search_status, live_status=live
        )

    async def _unpolled_calls(
        self, tenants: list[Tenant], limit: asyncio.Semaphore, now: datetime
    ) -> list[Drift]:
        """The calls of these tenants' open runs that wait on a queue no worker polls."""
        watch = QueueWatch(self._client, now)

        async def calls_of(tenant: Tenant) -> list[Drift]:
            async with limit:
                found = await watch.calls(tenant.id, self._workflow_id(tenant))
            return [
                Drift(kind=DriftKind.UNPOLLED_QUEUE, tenant_id=c.tenant_id, detail=c.describe())
                for c in found
            ]

        return [d for found in await asyncio.gather(*map(calls_of, tenants)) for d in found]

    async def _restart(self, tenant: Tenant, actor: str | None) -> bool:
        """Start a new run of the tenant's workflow, as its rules say, when its status is one
        they restart."""
        rules = self._rules_of(tenant)
        if tenant.status not in rules.restartable:
            return False
        asked = rules.asked_at(tenant)
        if asked is not None and datetime.now(UTC) - asked < self._settled_for:
            return False
        who = f"reconciler:{actor}" if actor else "reconciler"
        restarted = await rules.restart(self._client, tenant, who, self._task_queue)
        if restarted:
            _log.info("restarted stuck tenant", tenant_id=tenant.id, workflow=rules.workflow_type)
        return restarted


def _instance(server: StorageServer) -> str:
    """The PostgreSQL instance (host and port) a server entry's URL names."""
    parts = urlsplit(server.dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
