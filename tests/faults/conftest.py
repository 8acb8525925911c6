"""Shared pieces of the fault suite: the process environment built from `Settings`, waiting
for tenants to settle, and the session's ledger of faults and outcomes.

The ledger's figures (faults injected, tenants provisioned through them, tenants lost,
duplicate migration applications) are asserted at the end of the session and stored in the
pytest cache under `faults/figures` (`.pytest_cache/v/faults/figures`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from infra.db.repository import TenantRepository
from tenancy.models import SlaTier, StorageMode, Tenant, TenantSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.support.polling import eventually
from tests.support.processes import child_env

SETTLED = {TenantStatus.ACTIVE, TenantStatus.PROVISION_ERROR, TenantStatus.MIGRATION_ERROR}


def settings_env(settings: Settings, keys_dir: Path) -> dict[str, str]:
    """The environment under which `python worker.py` and the API run with `settings`."""
    # dbRole included: the worker grants each service's role its storage.
    services = [
        s.model_dump(mode="json", by_alias=True, exclude_none=True)
        for s in settings.downstream_services
    ]
    assert settings.temporal_address is not None
    return child_env(
        PLATFORM_DATABASE_URL=settings.require_database_url(),
        PLATFORM_STORAGE_DATABASE_URL=settings.require_storage_database_url(),
        PLATFORM_TASK_QUEUE=settings.task_queue,
        PLATFORM_DOWNSTREAM_SERVICES=json.dumps(services),
        PLATFORM_SIGNING_KEY_FILE=str(settings.require_signing_key_file()),
        PLATFORM_AUTH_PUBLIC_KEY_FILE=str(keys_dir / "idp.pem"),
        PLATFORM_MIGRATION_TIMEOUT=str(settings.migration_timeout.total_seconds()),
        PLATFORM_MIGRATION_MAX_ATTEMPTS=str(settings.migration_max_attempts),
        PLATFORM_MIGRATION_INITIAL_INTERVAL=str(
            settings.migration_initial_interval.total_seconds()
        ),
        PLATFORM_MIGRATION_MAX_INTERVAL=str(settings.migration_max_interval.total_seconds()),
        PLATFORM_LOG_LEVEL="INFO",
        PLATFORM_EVENTS_BACKEND=settings.events_backend,
        PLATFORM_EVENTS_URL=settings.events_url,
        PLATFORM_EVENTS_SOURCE=settings.events_source,
        TEMPORAL_ADDRESS=settings.temporal_address,
    )


def spec(tenant_id: str, mode: StorageMode = StorageMode.SCHEMA) -> TenantSpec:
    """A tenant to provision."""
    return TenantSpec(id=tenant_id, name="Fault", storage_mode=mode, sla_tier=SlaTier.STANDARD)


async def settle(
    tenants: TenantRepository, tenant_ids: Iterable[str], timeout: float = 60.0
) -> dict[str, Tenant]:
    """Each tenant's row once every one of them is in a status the workflow stops at."""
    ids = list(tenant_ids)

    async def probe() -> dict[str, Tenant | None]:
        return {tenant_id: await tenants.get(tenant_id) for tenant_id in ids}

    def settled(rows: dict[str, Tenant | None]) -> bool:
        return all(row is not None and row.status in SETTLED for row in rows.values())

    rows = await eventually(probe, settled, timeout=timeout, interval=0.2)
    return {tenant_id: row for tenant_id, row in rows.items() if row is not None}


async def until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll a synchronous `condition()` until it is true, with a deadline."""

    async def probe() -> bool:
        return bool(condition())

    await eventually(probe, bool, timeout=timeout, interval=0.02)


@dataclass
class FaultLedger:
    """What the fault suite did and what it found, across every test of the session."""

    faults: Counter[str] = field(default_factory=Counter)
    provisioned: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    duplicate_applications: int = 0
    started: float = field(default_factory=time.monotonic)

    def fault(self, kind: str) -> None:
        """Count one injected fault."""
        self.faults[kind] += 1

    def outcome(self, accepted: Iterable[str], active: Iterable[str]) -> None:
        """Tenants accepted before or during the faults, and those that ended ACTIVE."""
        accepted_ids = set(accepted)
        self.provisioned |= accepted_ids
        self.lost |= accepted_ids - set(active)

    def duplicates(self, count: int) -> None:
        """Count migrations applied more than once (should stay 0)."""
        self.duplicate_applications += count

    def figures(self) -> dict[str, object]:
        """The closing figures."""
        return {
            "faults_injected": sum(self.faults.values()),
            "faults_by_kind": dict(self.faults),
            "tenants_provisioned": len(self.provisioned),
            "tenants_lost": len(self.lost),
            "duplicate_migration_applications": self.duplicate_applications,
            "seconds": round(time.monotonic() - self.started, 1),
        }


@pytest.fixture(scope="session")
def ledger(request: pytest.FixtureRequest) -> Iterator[FaultLedger]:
    """The session's ledger; its invariants are checked once every fault test has run."""
    book = FaultLedger()
    yield book
    # Absent under `-p no:cacheprovider`.
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        cache.set("faults/figures", book.figures())
    assert not book.lost, f"tenants lost under faults: {sorted(book.lost)}"
    assert book.duplicate_applications == 0, book.figures()


def storage_copies(storage_url: str, name: str) -> int:
    """How many schemas and databases named `name` the storage server holds."""
    with psycopg.connect(storage_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = %s)"
            " + (SELECT count(*) FROM pg_database WHERE datname = %s)",
            (name, name),
        ).fetchone()
    assert row is not None
    return int(row[0])


def tenant_rows(database_url: str, tenant_id: str) -> int:
    """How many metadata rows the tenant has."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    assert row is not None
    return int(row[0])


def extra_keys(keys: Iterable[str | None]) -> int:
    """Distinct idempotency keys beyond the first: each one is a second logical call."""
    return max(0, len(set(keys)) - 1)
