"""Settings of the downstream service, from `DOWNSTREAM_*` environment variables.

Giving a service a new migration: `DOWNSTREAM_EXTRA_MIGRATIONS_DIRS` names folders (a JSON list,
or paths joined with the OS path separator, `:` on POSIX) whose `<id>.sql` files, each with an
optional `<id>.rollback.sql`, join the built-in set of `migrations/<service_name>` (or
`DOWNSTREAM_MIGRATIONS_DIR`). They apply in file-name order with the built-in ones, so a new
one must sort after every built-in one: `backend_0003_<what>.sql` for backend-service, whose
newest is `backend_0002_project_archiving`. The folders are read at start-up, so a restart
picks a new file up; a name clash, an extra migration sorting before a built-in one or a
missing folder stops the start-up with the reason (an empty folder is fine). `make dev` gives
each reference service `.devdata/migrations/<service-name>/`.

Consumer mode: with `DOWNSTREAM_EVENTS_URL` (`nats://host:4222`) the service also takes
`MigrateTenant` and `TeardownTenant` commands from NATS JetStream (see `consumer`) and signs its
replies with the private key in `DOWNSTREAM_REPLY_KEY_FILE`, which is then required.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BeforeValidator, Field, PostgresDsn, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIGRATIONS_ROOT = Path(__file__).resolve().parent / "migrations"


def _plain_seconds(value: Any) -> Any:
    # pydantic reads a string timedelta only as ISO 8601 or [-][D]HH:MM:SS, but environment
    # values such as "10" mean seconds.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Seconds = Annotated[timedelta, BeforeValidator(_plain_seconds)]


def _path_list(value: Any) -> Any:
    # A JSON list, as pydantic-settings reads lists, or the PATH-like form a shell writes.
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part for part in value.split(os.pathsep) if part.strip()]
    return value


PathList = Annotated[list[Path], NoDecode, BeforeValidator(_path_list)]


class AuthNotConfigured(ValueError):
    """Neither (or both) of the ways to get the platform's public keys is configured."""


class ConsumerNotConfigured(ValueError):
    """Consumer mode is asked for (`DOWNSTREAM_EVENTS_URL`) without a key to sign replies."""


class DownstreamSettings(BaseSettings):
    """Who this service is, where its migrations are, which PostgreSQL it migrates, and how it
    checks that a call comes from the platform."""

    model_config = SettingsConfigDict(env_prefix="DOWNSTREAM_", extra="ignore")

    # The name also picks the default migrations folder, so it must stay a plain folder name,
    # and names the history table `<name>_schema_history`, which must fit in 63 bytes.
    service_name: str = Field(default="backend-service", pattern=r"^[a-z][a-z0-9-]{1,47}$")
    # The service's own role and database: the database holds its state (seen token ids), and
    # the role's user, password and connection options (sslmode, ...) are used for every
    # tenant's storage too, whose host, port and database each call names. Optional at
    # start-up so the service can boot (and answer /healthz) before it is wired up; a migrate
    # call without it answers 503.
    database_url: PostgresDsn | None = None
    migrations_dir: Path | None = None
    # Folders of further migrations merged with the built-in set (see the module docstring).
    extra_migrations_dirs: PathList = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8101, ge=1, le=65535)
    connect_timeout: Seconds = Field(default=timedelta(seconds=5), gt=timedelta(0))
    lock_timeout: Seconds = Field(default=timedelta(seconds=10), gt=timedelta(0))
    # One pool per storage database. DATABASE mode makes a database per tenant, so pools are
    # bounded too: the least recently used one is closed to make room, and idle connections
    # close after `pool_max_idle`.
    pool_max_size: int = Field(default=4, ge=1)
    max_pools: int = Field(default=16, ge=1)
    pool_max_idle: Seconds = Field(default=timedelta(seconds=60), gt=timedelta(0))
    # Expired token ids are deleted at most this often (by whichever call comes next).
    seen_tokens_purge_interval: Seconds = Field(default=timedelta(seconds=60), ge=timedelta(0))

    # Where the platform's public keys come from: its JWK Set (follows key rotation) or one PEM
    # file (a private key file works too; only its public half is kept). Exactly one is required.
    platform_jwks_url: AnyHttpUrl | None = None
    platform_public_key_file: Path | None = None
    platform_issuer: str = "platform-service"
    # Clock skew tolerated on exp, nbf and iat; tokens live minutes, so this stays short.
    token_leeway: Seconds = Field(default=timedelta(seconds=30), ge=timedelta(0))
    # The platform serves its JWKS with max-age=300; a key missing from the cached set forces
    # one refresh per cooldown at most, so unknown key ids cannot make this service hammer it.
    jwks_cache_ttl: Seconds = Field(default=timedelta(minutes=5), gt=timedelta(0))
    jwks_refresh_cooldown: Seconds = Field(default=timedelta(seconds=10), ge=timedelta(0))
    jwks_timeout: Seconds = Field(default=timedelta(seconds=5), gt=timedelta(0))

    # Consumer mode (beside HTTP): commands from NATS JetStream, replies signed with the reply
    # key (PEM, RSA or EC P-256), whose public half the platform is configured with.
    events_url: Annotated[str, Field(pattern=r"^(nats|tls)://\S+$")] | None = None
    reply_key_file: Path | None = None
    # Commands handled at once; each holds one thread while it migrates.
    consumer_concurrency: int = Field(default=8, ge=1, le=64)

    # The platform's tenant directory, where the runtime endpoints (examples.downstream_service.
    # runtime) find each tenant's storage: the platform API's URL, a token with the scope
    # `directory:read`, and the NATS URL of the lifecycle events to follow changes (without it
    # an entry older than `directory_max_age` is revalidated). Unset: no runtime endpoints (503).
    directory_url: AnyHttpUrl | None = None
    directory_token: SecretStr | None = None
    directory_events_url: Annotated[str, Field(pattern=r"^(nats|tls)://\S+$")] | None = None
    directory_max_age: Seconds = Field(default=timedelta(seconds=5), gt=timedelta(0))

    @property
    def migrations_path(self) -> Path:
        """The configured migrations folder, else `migrations/<service_name>` in this package."""
        return self.migrations_dir or MIGRATIONS_ROOT / self.service_name

    def require_key_source(self) -> AnyHttpUrl | Path:
        """The one configured source of the platform's public keys.

        Checked at start-up rather than on construction, so the settings (and the module-level
        app) can be built before the environment is complete; the service itself never runs
        without a way to verify the platform's tokens.
        """
        if self.platform_jwks_url is not None and self.platform_public_key_file is not None:
            raise AuthNotConfigured(
                "set only one of DOWNSTREAM_PLATFORM_JWKS_URL and "
                "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE"
            )
        source = self.platform_jwks_url or self.platform_public_key_file
        if source is None:
            raise AuthNotConfigured(
                f"{self.service_name} verifies every platform call and has no key to do it with: "
                "set DOWNSTREAM_PLATFORM_JWKS_URL (the platform's /.well-known/jwks.json) or "
                "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE (a PEM file with its public key)"
            )
        return source

    def require_reply_key(self) -> Path | None:
        """The reply key file when consumer mode is on (None when it is off).

        ConsumerNotConfigured when `DOWNSTREAM_EVENTS_URL` is set without
        `DOWNSTREAM_REPLY_KEY_FILE`: replies the platform cannot verify would all be refused.
        """
        if self.events_url is None:
            return None
        if self.reply_key_file is None:
            raise ConsumerNotConfigured(
                f"{self.service_name} consumes commands (DOWNSTREAM_EVENTS_URL) and signs every "
                "reply: set DOWNSTREAM_REPLY_KEY_FILE (a PEM private key, RSA or EC P-256, "
                "whose public half the platform has)"
            )
        return self.reply_key_file


@lru_cache(maxsize=1)
def get_settings() -> DownstreamSettings:
    """Settings read once from the environment (tests build their own instead)."""
    return DownstreamSettings()
