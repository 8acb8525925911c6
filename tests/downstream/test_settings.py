"""Settings and app construction: environment prefix, defaults, nothing done before start-up."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from examples.downstream_service.app import create_app
from examples.downstream_service.settings import MIGRATIONS_ROOT, DownstreamSettings


def test_defaults_pick_the_backend_service() -> None:
    settings = DownstreamSettings()
    assert (settings.service_name, settings.port, settings.database_url) == (
        "backend-service",
        8101,
        None,
    )
    assert settings.migrations_path == MIGRATIONS_ROOT / "backend-service"


def test_environment_with_prefix_configures_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWNSTREAM_SERVICE_NAME", "auth-service")
    monkeypatch.setenv("DOWNSTREAM_DATABASE_URL", "postgresql://svc@db.internal:5433/postgres")
    monkeypatch.setenv("DOWNSTREAM_PORT", "8102")
    monkeypatch.setenv("DOWNSTREAM_LOCK_TIMEOUT", "30")

    settings = DownstreamSettings()

    assert settings.service_name == "auth-service"
    assert str(settings.database_url) == "postgresql://svc@db.internal:5433/postgres"
    assert settings.port == 8102
    assert settings.lock_timeout == timedelta(seconds=30)
    assert settings.migrations_path == MIGRATIONS_ROOT / "auth-service"
    assert sorted(path.name for path in settings.migrations_path.glob("*.sql")) == [
        "auth_0001_users.rollback.sql",
        "auth_0001_users.sql",
        "auth_0002_sessions_roles.rollback.sql",
        "auth_0002_sessions_roles.sql",
    ]


def test_service_name_cannot_escape_the_migrations_folder() -> None:
    with pytest.raises(pydantic.ValidationError, match="service_name"):
        DownstreamSettings(service_name="../../etc")


async def test_migrations_are_read_at_start_up_not_at_construction(tmp_path: Path) -> None:
    app = create_app(DownstreamSettings(migrations_dir=tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        async with app.router.lifespan_context(app):
            pass


async def test_start_up_refuses_an_empty_migrations_folder(tmp_path: Path) -> None:
    app = create_app(DownstreamSettings(migrations_dir=tmp_path))
    with pytest.raises(ValueError, match="no migrations"):
        async with app.router.lifespan_context(app):
            pass
