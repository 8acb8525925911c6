"""The reconciler's storage rules over several servers, on given inventories (the catalogs'
reading is covered against real servers in tests/integration/test_reconciliation_per_server.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from reconciliation.inventory import FleetInventory, StorageSnapshot
from reconciliation.reconciler import Drift, DriftKind, Reconciler
from tenancy.fleet import StorageServer
from tenancy.models import SlaTier, StorageMode, Tenant
from tenancy.status import TenantStatus

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def server(name: str, url: str) -> StorageServer:
    return StorageServer.model_validate({"name": name, "url": url, "maxTenants": 10})


def tenant(tenant_id: str, mode: StorageMode, on: str | None) -> Tenant:
    return Tenant(
        id=tenant_id,
        name=tenant_id,
        storage_mode=mode,
        sla_tier=SlaTier.BASIC,
        status=TenantStatus.ACTIVE,
        jdbc_url="jdbc:postgresql://h:5432/x",
        storage_server=on,
        workflow_id=f"wf-{tenant_id}",
        created_at=NOW,
        updated_at=NOW,
    )


def reconciler(*servers: StorageServer) -> Reconciler:
    return Reconciler(cast(Any, None), cast(Any, None), servers=servers, task_queue="q")


def snapshot(schemas: tuple[str, ...] = (), databases: tuple[str, ...] = ()) -> StorageSnapshot:
    return StorageSnapshot(schemas=frozenset(schemas), databases=frozenset(databases))


def found(drift: list[Drift]) -> set[tuple[DriftKind, str | None, str | None]]:
    return {(d.kind, d.tenant_id, d.server) for d in drift}


def test_two_entries_on_one_instance_share_its_databases() -> None:
    """Databases are instance-wide: both entries list the tenant's database, which is its
    storage on either, and an unowned one is reported once."""
    check = reconciler(
        server("pg-one", "postgresql://platform@10.0.0.5:5432/tenants"),
        server("pg-two", "postgresql://platform@10.0.0.5:5432/more_tenants"),
    )
    rows = [tenant("acme", StorageMode.DATABASE, "pg-two")]
    listed = snapshot(databases=("tenant_acme", "tenant_ghost"))
    inventory = FleetInventory(snapshots={"pg-one": listed, "pg-two": listed}, unreachable={})

    assert found(check._orphans(rows, inventory)) == {(DriftKind.ORPHAN_STORAGE, "ghost", "pg-one")}
    assert check._storage_drift(rows[0], inventory) == []


def test_schemas_belong_to_their_server_and_a_down_one_says_nothing() -> None:
    check = reconciler(
        server("pg-a", "postgresql://platform@10.0.0.5:5432/tenants"),
        server("pg-b", "postgresql://platform@10.0.0.6:5432/tenants"),
    )
    rows = [
        tenant("on_a", StorageMode.SCHEMA, "pg-a"),
        tenant("on_b", StorageMode.SCHEMA, "pg-b"),
        tenant("nowhere", StorageMode.SCHEMA, None),
    ]
    inventory = FleetInventory(
        snapshots={"pg-a": snapshot(schemas=("tenant_on_b", "tenant_nowhere"))},
        unreachable={"pg-b": "connection refused"},
    )

    orphans = check._orphans(rows, inventory)
    missing = [d for row in rows for d in check._storage_drift(row, inventory)]

    assert found(orphans) == {
        (DriftKind.ORPHAN_STORAGE, "on_b", "pg-a"),
        (DriftKind.ORPHAN_STORAGE, "nowhere", "pg-a"),
    }
    assert {d.tenant_id: d.detail for d in orphans} == {
        "on_b": "schema tenant_on_b on server pg-a is not its tenant's storage: "
        "the tenant is on server pg-b (left in place)",
        "nowhere": "schema tenant_nowhere on server pg-a is not its tenant's storage: "
        "the tenant was never placed (left in place)",
    }
    # on_a's schema is gone from pg-a; on_b's server could not be read; nowhere has none.
    assert found(missing) == {(DriftKind.STORAGE_MISSING, "on_a", "pg-a")}
