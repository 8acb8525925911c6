"""Settings and app construction: environment prefix, defaults, nothing done before start-up,
and no start-up at all without a way to verify the platform's tokens."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from examples.downstream_service.__main__ import main
from examples.downstream_service.app import create_app
from examples.downstream_service.settings import (
    MIGRATIONS_ROOT,
    AuthNotConfigured,
    DownstreamSettings,
)
from tests.downstream.tokens import PlatformKey


def test_defaults_pick_the_backend_service() -> None:
    settings = DownstreamSettings()
    assert (settings.service_name, settings.port, settings.database_url) == (
        "backend-service",
        8101,
        None,
    )
    assert settings.migrations_path == MIGRATIONS_ROOT / "backend-service"
    assert (settings.platform_jwks_url, settings.platform_public_key_file) == (None, None)
    assert settings.platform_issuer == "platform-service"
    assert settings.token_leeway == timedelta(seconds=30)


def test_environment_with_prefix_configures_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWNSTREAM_SERVICE_NAME", "auth-service")
    monkeypatch.setenv("DOWNSTREAM_DATABASE_URL", "postgresql://svc@db.internal:5433/postgres")
    monkeypatch.setenv("DOWNSTREAM_PORT", "8102")
    monkeypatch.setenv("DOWNSTREAM_LOCK_TIMEOUT", "30")
    monkeypatch.setenv(
        "DOWNSTREAM_PLATFORM_JWKS_URL", "http://127.0.0.1:8000/.well-known/jwks.json"
    )
    monkeypatch.setenv("DOWNSTREAM_PLATFORM_ISSUER", "platform-staging")
    monkeypatch.setenv("DOWNSTREAM_TOKEN_LEEWAY", "5")

    settings = DownstreamSettings()

    assert settings.service_name == "auth-service"
    assert str(settings.database_url) == "postgresql://svc@db.internal:5433/postgres"
    assert settings.port == 8102
    assert settings.lock_timeout == timedelta(seconds=30)
    assert str(settings.platform_jwks_url) == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert settings.require_key_source() == settings.platform_jwks_url
    assert settings.platform_issuer == "platform-staging"
    assert settings.token_leeway == timedelta(seconds=5)
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


async def test_migrations_are_read_at_start_up_not_at_construction(
    tmp_path: Path, platform: PlatformKey
) -> None:
    app = create_app(platform.settings(None, migrations_dir=tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        async with app.router.lifespan_context(app):
            pass


async def test_start_up_refuses_an_empty_migrations_folder(
    tmp_path: Path, platform: PlatformKey
) -> None:
    app = create_app(platform.settings(None, migrations_dir=tmp_path))
    with pytest.raises(ValueError, match="no migrations"):
        async with app.router.lifespan_context(app):
            pass


async def test_start_up_refuses_to_run_without_platform_keys() -> None:
    # Secure by default: no key source is a failed start, never an open endpoint.
    app = create_app(DownstreamSettings(service_name="auth-service"))
    with pytest.raises(AuthNotConfigured) as failure:
        async with app.router.lifespan_context(app):
            pass
    message = str(failure.value)
    assert message.startswith("auth-service verifies every platform call")
    assert "DOWNSTREAM_PLATFORM_JWKS_URL" in message
    assert "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE" in message


def test_both_key_sources_at_once_are_refused(platform: PlatformKey) -> None:
    settings = DownstreamSettings(
        platform_public_key_file=platform.public_file,
        platform_jwks_url="http://127.0.0.1:8000/.well-known/jwks.json",
    )
    with pytest.raises(AuthNotConfigured, match="set only one of"):
        settings.require_key_source()


def test_command_line_exits_with_the_reason_before_serving(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--name", "auth-service", "--port", "1"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "auth-service verifies every platform call" in error
    assert "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE" in error


async def test_start_up_refuses_a_key_file_it_cannot_use(tmp_path: Path) -> None:
    not_a_key = tmp_path / "notes.pem"
    not_a_key.write_text("hello")
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for path, reason in [
        (tmp_path / "missing.pem", "No such file"),
        (not_a_key, "holds no PEM public or unencrypted private key"),
        (p384, "ES256"),
    ]:
        app = create_app(DownstreamSettings(platform_public_key_file=path))
        with pytest.raises((OSError, ValueError), match=reason):
            async with app.router.lifespan_context(app):
                pass
