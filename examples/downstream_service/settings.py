"""Settings of the downstream service, from `DOWNSTREAM_*` environment variables."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PostgresDsn
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class DownstreamSettings(BaseSettings):
    """Who this service is, where its migrations are and which PostgreSQL it migrates."""

    model_config = SettingsConfigDict(env_prefix="DOWNSTREAM_", extra="ignore")

    # The name also picks the default migrations folder, so it must stay a plain folder name.
    service_name: str = Field(default="backend-service", pattern=r"^[a-z][a-z0-9-]{1,62}$")
    # Optional at start-up so the service can boot (and answer /healthz) before it is wired up;
    # a migrate call without it answers 503.
    database_url: PostgresDsn | None = None
    migrations_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8101, ge=1, le=65535)
    connect_timeout: Seconds = Field(default=timedelta(seconds=5), gt=timedelta(0))
    lock_timeout: Seconds = Field(default=timedelta(seconds=10), gt=timedelta(0))

    @property
    def migrations_path(self) -> Path:
        """The configured migrations folder, else `migrations/<service_name>` in this package."""
        return self.migrations_dir or MIGRATIONS_ROOT / self.service_name


@lru_cache(maxsize=1)
def get_settings() -> DownstreamSettings:
    """Settings read once from the environment (tests build their own instead)."""
    return DownstreamSettings()
