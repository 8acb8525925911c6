"""Domain models shared by the API, the workflow and the activities (JSON in camelCase)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    computed_field,
)
from pydantic.alias_generators import to_camel

from tenancy.status import MigrationStatus, TenantStatus
from tenancy.text import refuse_unprintable

# Kept here (not imported from naming) because naming builds on these models.
TENANT_ID_PATTERN = r"^[a-z][a-z0-9_]{2,39}$"
# The largest count a request may carry (PostgreSQL's integer): whatever column or query
# parameter it reaches holds it, so an absurd number is a 422, never an overflow in SQL.
MAX_REQUEST_INT = 2**31 - 1
# Request models are strict, but FastAPI validates the parsed JSON body in Python mode, where a
# strict enum wants an enum instance: an enum of a request takes its value with this (an item of
# a list; an enum field says Field(strict=False)).
BY_VALUE = Strict(False)


class CamelModel(BaseModel):
    """Base for every model that crosses a process boundary: camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class RequestModel(CamelModel):
    """Base of every request body: unknown fields are refused, and every field takes only the
    JSON type its OpenAPI schema says ("16" is no integer, true no number, "yes" no boolean,
    1.0 no integer); enums take their string values (see `BY_VALUE`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StorageMode(StrEnum):
    """Isolation of a tenant's data: its own schema, or its own database."""

    SCHEMA = "SCHEMA"
    DATABASE = "DATABASE"


class SlaTier(StrEnum):
    """Commercial tier; recorded and searchable, used for routing later."""

    BASIC = "BASIC"
    STANDARD = "STANDARD"
    PREMIUM = "PREMIUM"


TenantId = Annotated[
    str,
    Field(pattern=TENANT_ID_PATTERN, description="Lowercase letter, then 2-39 of [a-z0-9_]."),
]
TenantName = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    Field(min_length=1, max_length=200, description="1-200 printable characters, trimmed."),
    AfterValidator(refuse_unprintable),
]


class TenantSpec(RequestModel):
    """What an operator asks for. Unknown fields are rejected rather than silently dropped."""

    id: TenantId
    name: TenantName
    # Field(strict=False) rather than BY_VALUE: pydantic's mypy plugin reads this one, so code
    # may still pass an enum's value.
    storage_mode: StorageMode = Field(strict=False)
    sla_tier: SlaTier = Field(strict=False)


class StorageLocation(CamelModel):
    """Where a tenant's data lives: enough for a service to connect with its own credentials."""

    mode: StorageMode
    database: str
    schema_name: str = Field(alias="schema")
    jdbc_url: str


class MovePhase(StrEnum):
    """Where a tenant's move between storage servers stands (the tenant's `move.phase`)."""

    PREPARING = "PREPARING"
    FROZEN = "FROZEN"
    COPYING = "COPYING"
    VERIFYING = "VERIFYING"
    SWITCHED = "SWITCHED"


class Move(CamelModel):
    """A tenant's move to another storage server, as asked and as far as it went: present only
    while the tenant is MOVING."""

    requested_at: datetime
    requested_by: str
    reason: str | None = None
    from_server: str
    to_server: str
    phase: MovePhase


class RetainedSource(CamelModel):
    """A move's frozen source, kept on its server after the switch until `drop_after`, then
    dropped (`StorageAdmin.drop`); no orphan meanwhile. `id` once it is recorded."""

    tenant_id: str
    server: str
    mode: StorageMode
    database: str
    schema_name: str
    drop_after: datetime
    id: int | None = None
    retained_at: datetime | None = None
    dropped_at: datetime | None = None


class MigrationRecord(CamelModel):
    """One downstream service's migration state for one tenant."""

    service: str
    status: MigrationStatus
    version: str | None = None
    attempts: int = 0
    last_error: str | None = None
    updated_at: datetime


class BackupRecord(CamelModel):
    """A backup of a tenant's storage taken before it was dropped."""

    path: str
    size_bytes: int
    sha256: str


class Deletion(CamelModel):
    """A tenant's deletion request: who asked, why, and when the purge starts. `backup` is
    there once the purge has dumped the storage (additive to the contract)."""

    requested_at: datetime
    requested_by: str
    reason: str | None = None
    purge_at: datetime
    backup: BackupRecord | None = None


class Tenant(CamelModel):
    """A tenant as stored in the platform's metadata and returned by the API."""

    id: str
    name: str
    storage_mode: StorageMode
    sla_tier: SlaTier
    status: TenantStatus
    status_reason: str | None = None
    jdbc_url: str | None = None
    # The storage server the tenant is placed on (None until placed, before its storage is
    # created); `jdbcUrl` names that server's host and port.
    storage_server: str | None = None
    migrations: list[MigrationRecord] = Field(default_factory=list)
    workflow_id: str
    # The run that owns the row; a run that adopts the tenant names it (docs/operating/recovery.md).
    workflow_run_id: str | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    # Present from the deletion request on (also on a DELETED tombstone); absent after restore.
    deletion: Deletion | None = None
    # Present only while the tenant is MOVING.
    move: Move | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_migration_version(self) -> dict[str, str]:
        """Newest applied version per service, for services that reported one."""
        return {m.service: m.version for m in self.migrations if m.version is not None}


class TenantLocation(CamelModel):
    """Where a tenant's storage is and whether it may be used: what a service needs to serve a
    request for it (the tenant directory). `epoch` grows by one with every change of the status,
    the server or the jdbcUrl, and never otherwise: of two locations the higher epoch is newer."""

    tenant_id: str
    status: TenantStatus
    storage_mode: StorageMode
    storage_server: str | None = None
    jdbc_url: str | None = None
    epoch: int


class EventAction(StrEnum):
    """What an audit event records."""

    CREATED = "CREATED"
    STATUS_CHANGED = "STATUS_CHANGED"
    RETRY_REQUESTED = "RETRY_REQUESTED"
    # A new workflow run took the tenant over from the run named in the event's reason.
    RUN_ADOPTED = "RUN_ADOPTED"
    # Offboarding: a deletion asked (reason = the operator's), cancelled by restore, and the
    # backup written before the purge (reason = its path, size and sha256).
    DELETION_REQUESTED = "DELETION_REQUESTED"
    DELETION_CANCELLED = "DELETION_CANCELLED"
    BACKUP_TAKEN = "BACKUP_TAKEN"
    # A fleet rollout changed a service's version of the tenant (reason: service, old -> new).
    VERSION_CHANGED = "VERSION_CHANGED"
    # A move: asked (reason = the operator's), switched to the target (reason: from -> to),
    # rolled back by itself (reason = the failure) or by cancel-move.
    MOVE_REQUESTED = "MOVE_REQUESTED"
    TENANT_MOVED = "TENANT_MOVED"
    MOVE_FAILED = "MOVE_FAILED"
    MOVE_CANCELLED = "MOVE_CANCELLED"
    # PATCH changed its name or tier (reason: each field's old -> new).
    TENANT_UPDATED = "TENANT_UPDATED"


class TenantEvent(CamelModel):
    """One entry of a tenant's audit trail."""

    id: int
    tenant_id: str
    occurred_at: datetime
    actor: str
    action: EventAction
    old_status: TenantStatus | None = None
    new_status: TenantStatus | None = None
    reason: str | None = None
