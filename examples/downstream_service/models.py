"""Request and response bodies of the migrate and teardown endpoints (JSON in camelCase)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
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
JDBC_PREFIX = "jdbc:postgresql://"
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True, slots=True)
class StorageAddress:
    """A database on one storage server: what a connection pool is kept for."""

    host: str
    port: int
    database: str


def parse_jdbc_url(value: str) -> StorageAddress:
    """Host, port and database of `jdbc:postgresql://host:port/db?...`; ValueError otherwise.

    Strict on purpose: one host (a bracketed IPv6 literal is fine), a port, one database, no
    user or password (credentials are the service's own), so the URL cannot steer the service
    anywhere its shape does not plainly say.
    """
    if not value.startswith(JDBC_PREFIX):
        raise ValueError("must start with jdbc:postgresql://")
    # urlsplit silently drops tabs and newlines, which would make the logged URL lie.
    if not value.isprintable() or " " in value:
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value.removeprefix("jdbc:"))
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ValueError("must not contain a password")
    if "@" in parts.netloc:
        raise ValueError("must not name a user")
    host, colon, port = parts.netloc.rpartition(":")
    if not colon or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise ValueError("must name one host and its port (host:port)")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError("must name a valid IPv6 address in brackets") from None
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError("must name one host and its port (host:port)")
    database = parts.path.removeprefix("/")
    if not re.fullmatch(DATABASE_PATTERN, database):
        raise ValueError("must name one database after the port")
    return StorageAddress(host=host, port=int(port), database=database)


class StorageMode(StrEnum):
    """Where the tenant's tables live: its own schema, or its own database."""

    SCHEMA = "SCHEMA"
    DATABASE = "DATABASE"


class MigrateRequest(BaseModel):
    """Body of `POST /internal/tenants/{id}/migrate` and of `DELETE /internal/tenants/{id}`:
    where the tenant's storage is (a teardown needs no other lookup).

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
    def _parses(cls, value: str) -> str:
        # Parsed here so a malformed URL is a 422 naming jdbcUrl; it is also logged, hence
        # no password.
        parse_jdbc_url(value)
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
        jdbc_url = info.data.get("jdbc_url")
        if jdbc_url is not None and parse_jdbc_url(jdbc_url).database != value:
            raise ValueError("must be the database jdbcUrl names")
        return value

    @property
    def storage_address(self) -> StorageAddress:
        """The storage server and database this call migrates: host and port from jdbcUrl."""
        return parse_jdbc_url(self.jdbc_url)


class MigrateResponse(BaseModel):
    """What a migrate call did: the newest applied version and what this call applied."""

    version: str
    applied: list[str]


class TeardownResponse(BaseModel):
    """What a teardown dropped: this service's top-level objects in the tenant's storage."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    tenant_id: str
    dropped: list[str]
