"""Request and response bodies of the migrate endpoint (JSON in camelCase)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

# Same rules as the platform's; repeated rather than imported because a downstream service
# shares only the HTTP contract with the platform, not its code.
TENANT_ID_PATTERN = r"^[a-z][a-z0-9_]{2,39}$"
DATABASE_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
STORAGE_PREFIX = "tenant_"
DATABASE_MODE_SCHEMA = "public"


class StorageMode(StrEnum):
    """Where the tenant's tables live: its own schema, or its own database."""

    SCHEMA = "SCHEMA"
    DATABASE = "DATABASE"


class MigrateRequest(BaseModel):
    """Body of `POST /internal/tenants/{id}/migrate`.

    Unknown fields are ignored so the platform can add fields before every service knows them.
    """

    # Aliases only: the wire format is camelCase and nothing else.
    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")

    tenant_id: Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
    storage_mode: StorageMode
    jdbc_url: Annotated[str, Field(min_length=1, max_length=2048)]
    schema_name: Annotated[str, Field(alias="schema", min_length=1, max_length=63)]
    database: Annotated[str, Field(pattern=DATABASE_PATTERN)]

    @field_validator("jdbc_url")
    @classmethod
    def _no_password(cls, value: str) -> str:
        # The URL is logged, so refuse the one shape that could put a secret in the logs.
        if not value.startswith("jdbc:postgresql://"):
            raise ValueError("must start with jdbc:postgresql://")
        parts = urlsplit(value.removeprefix("jdbc:"))
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError("must not contain a password")
        return value

    # Field validators see earlier fields in `info.data`, so errors name the field itself. When
    # tenantId or storageMode is itself invalid it is missing there and already reported.
    @field_validator("schema_name")
    @classmethod
    def _schema_matches_mode(cls, value: str, info: ValidationInfo) -> str:
        mode, tenant_id = info.data.get("storage_mode"), info.data.get("tenant_id")
        if mode is None or tenant_id is None:
            return value
        expected = (
            DATABASE_MODE_SCHEMA if mode is StorageMode.DATABASE else STORAGE_PREFIX + tenant_id
        )
        if value != expected:
            raise ValueError(f"must be {expected!r} in {mode} mode")
        return value

    @field_validator("database")
    @classmethod
    def _database_matches_mode(cls, value: str, info: ValidationInfo) -> str:
        mode, tenant_id = info.data.get("storage_mode"), info.data.get("tenant_id")
        if mode is StorageMode.DATABASE and tenant_id is not None:
            expected = STORAGE_PREFIX + tenant_id
            if value != expected:
                raise ValueError(f"must be {expected!r} in DATABASE mode")
        return value


class MigrateResponse(BaseModel):
    """What a migrate call did: the newest applied version and what this call applied."""

    version: str
    applied: list[str]
