"""Settings read from the environment: prefixes, JSON lists, durations, bounds, fallbacks."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from tenancy.settings import DEFAULT_DOWNSTREAM_SERVICES, TASK_QUEUE, Settings, get_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def invalid_fields(**env: str) -> set[str]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(ValidationError) as caught:
            Settings()
    # A model-level error (e.g. duplicate service names) has an empty loc.
    return {str(error["loc"][0]) if error["loc"] else "" for error in caught.value.errors()}


def test_defaults() -> None:
    settings = Settings()

    assert settings.database_url is None
    assert settings.storage_database_url is None
    assert settings.api_port == 8000
    assert settings.downstream_services == DEFAULT_DOWNSTREAM_SERVICES
    assert [s.name for s in settings.downstream_services] == ["backend-service", "auth-service"]
    assert settings.migration_max_attempts == 5
    assert settings.migration_initial_interval == timedelta(seconds=1)
    assert settings.task_queue == TASK_QUEUE == "platform-tenants"
    assert settings.temporal_address is None


def test_downstream_services_from_camel_case_json(monkeypatch: pytest.MonkeyPatch) -> None:
    services = [
        {"name": "billing", "baseUrl": "http://billing.internal:9000"},
        {"name": "search-service", "baseUrl": "https://search.internal/prefix"},
    ]
    monkeypatch.setenv("PLATFORM_DOWNSTREAM_SERVICES", json.dumps(services))

    settings = Settings()

    assert [(s.name, str(s.base_url)) for s in settings.downstream_services] == [
        ("billing", "http://billing.internal:9000/"),
        ("search-service", "https://search.internal/prefix"),
    ]


@pytest.mark.parametrize(
    "services",
    [
        pytest.param([{"name": "auth"}], id="missing-base-url"),
        pytest.param([{"name": "auth", "baseUrl": "not a url"}], id="bad-url"),
        pytest.param([{"name": "auth", "baseUrl": "ftp://a:1"}], id="not-http"),
        pytest.param([{"name": "Auth", "baseUrl": "http://a:1"}], id="uppercase-name"),
        pytest.param([{"name": "a", "baseUrl": "http://a:1"}], id="one-char-name"),
        pytest.param({"name": "auth", "baseUrl": "http://a:1"}, id="object-not-list"),
    ],
)
def test_bad_downstream_services_rejected(services: object) -> None:
    assert invalid_fields(PLATFORM_DOWNSTREAM_SERVICES=json.dumps(services)) == {
        "downstream_services"
    }


def test_duplicate_service_names_message_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = [
        {"name": "auth", "baseUrl": "http://a:1"},
        {"name": "auth", "baseUrl": "http://b:2"},
    ]
    monkeypatch.setenv("PLATFORM_DOWNSTREAM_SERVICES", json.dumps(services))

    with pytest.raises(ValidationError, match="PLATFORM_DOWNSTREAM_SERVICES has duplicate"):
        Settings()


def test_db_role_is_read_from_camel_case_and_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    services = [
        {"name": "billing", "baseUrl": "http://billing:9000", "dbRole": "billing_service"},
        {"name": "search", "baseUrl": "http://search:9000"},
    ]
    monkeypatch.setenv("PLATFORM_DOWNSTREAM_SERVICES", json.dumps(services))

    settings = Settings()

    assert [s.db_role for s in settings.downstream_services] == ["billing_service", None]
    assert settings.service_db_roles() == ("billing_service",)


@pytest.mark.parametrize(
    "role",
    [
        pytest.param("Billing", id="uppercase"),
        pytest.param("billing-service", id="dash"),
        pytest.param("1billing", id="leading-digit"),
        pytest.param("b" * 64, id="longer-than-63"),
        pytest.param("", id="empty"),
        pytest.param('x"; DROP ROLE postgres; --', id="injection"),
        # `public` is every role: a grant to it would open each tenant to all.
        pytest.param("public", id="public"),
        pytest.param("none", id="none"),
        pytest.param("pg_read_all_data", id="predefined-role"),
    ],
)
def test_bad_db_roles_rejected(role: str) -> None:
    services = [{"name": "billing", "baseUrl": "http://billing:9000", "dbRole": role}]
    assert invalid_fields(PLATFORM_DOWNSTREAM_SERVICES=json.dumps(services)) == {
        "downstream_services"
    }


def test_services_sharing_a_db_role_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    services = [
        {"name": "billing", "baseUrl": "http://a:1", "dbRole": "shared"},
        {"name": "search", "baseUrl": "http://b:2", "dbRole": "shared"},
    ]
    monkeypatch.setenv("PLATFORM_DOWNSTREAM_SERVICES", json.dumps(services))

    with pytest.raises(ValidationError, match="sharing a dbRole"):
        Settings()


def test_downstream_services_json_must_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_DOWNSTREAM_SERVICES", "[{not json")

    with pytest.raises(SettingsError, match="downstream_services"):
        Settings()


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        (
            "PLATFORM_MIGRATION_INITIAL_INTERVAL",
            "migration_initial_interval",
            timedelta(seconds=0.5),
        ),
        ("PLATFORM_MIGRATION_INITIAL_INTERVAL", "migration_initial_interval", timedelta(seconds=2)),
        ("PLATFORM_MIGRATION_MAX_INTERVAL", "migration_max_interval", timedelta(seconds=120)),
        ("PLATFORM_MIGRATION_TIMEOUT", "migration_timeout", timedelta(milliseconds=1500)),
        ("PLATFORM_CREATE_TIMEOUT", "create_timeout", timedelta(seconds=3)),
    ],
)
def test_durations_are_seconds(
    monkeypatch: pytest.MonkeyPatch, env: str, field: str, expected: timedelta
) -> None:
    monkeypatch.setenv(env, str(expected.total_seconds()))

    assert getattr(Settings(), field) == expected


def test_half_second_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_MIGRATION_INITIAL_INTERVAL", "0.5")

    assert Settings().migration_initial_interval == timedelta(milliseconds=500)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("PLATFORM_MIGRATION_INITIAL_INTERVAL", "0"),
        ("PLATFORM_MIGRATION_INITIAL_INTERVAL", "-1"),
        ("PLATFORM_MIGRATION_INITIAL_INTERVAL", "soon"),
        ("PLATFORM_MIGRATION_INITIAL_INTERVAL", "nan"),
        ("PLATFORM_MIGRATION_TIMEOUT", "0"),
        ("PLATFORM_CREATE_TIMEOUT", "-0.5"),
        ("PLATFORM_MIGRATION_MAX_ATTEMPTS", "0"),
        ("PLATFORM_MIGRATION_MAX_ATTEMPTS", "-3"),
        ("PLATFORM_MIGRATION_MAX_ATTEMPTS", "101"),
        ("PLATFORM_MIGRATION_MAX_ATTEMPTS", "2.5"),
        ("PLATFORM_MIGRATION_MAX_ATTEMPTS", "five"),
        ("PLATFORM_API_PORT", "0"),
        ("PLATFORM_API_PORT", "65536"),
        ("PLATFORM_DATABASE_URL", "mysql://db/platform"),
        ("PLATFORM_STORAGE_DATABASE_URL", "not a url"),
    ],
)
def test_out_of_range_values_rejected_naming_the_field(env: str, value: str) -> None:
    field = env.removeprefix("PLATFORM_").lower()

    assert invalid_fields(**{env: value}) == {field}


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("5", 5), ("100", 100)])
def test_max_attempts_bounds(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("PLATFORM_MIGRATION_MAX_ATTEMPTS", value)

    assert Settings().migration_max_attempts == expected


def test_require_database_url_raises_a_clear_error_when_unset() -> None:
    settings = Settings()

    with pytest.raises(RuntimeError, match="PLATFORM_DATABASE_URL is not set"):
        settings.require_database_url()
    with pytest.raises(RuntimeError, match="PLATFORM_DATABASE_URL is not set"):
        settings.require_storage_database_url()


def test_storage_database_url_falls_back_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_DATABASE_URL", "postgresql://svc@db.internal:5432/platform")

    settings = Settings()

    assert settings.require_database_url() == "postgresql://svc@db.internal:5432/platform"
    assert settings.require_storage_database_url() == settings.require_database_url()


def test_storage_database_url_wins_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_DATABASE_URL", "postgresql://svc@meta:5432/platform")
    monkeypatch.setenv("PLATFORM_STORAGE_DATABASE_URL", "postgresql://admin@store:5432/tenants")

    settings = Settings()

    assert settings.require_database_url() == "postgresql://svc@meta:5432/platform"
    assert settings.require_storage_database_url() == "postgresql://admin@store:5432/tenants"


def test_temporal_address_is_read_without_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_TEMPORAL_ADDRESS", "wrong:7233")
    assert Settings().temporal_address is None

    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    assert Settings().temporal_address == "temporal.internal:7233"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9999")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")

    settings = Settings()

    assert settings.api_port == 8000
    assert settings.database_url is None


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_API_PORT", "8100")
    first = get_settings()
    monkeypatch.setenv("PLATFORM_API_PORT", "8200")

    assert get_settings() is first
    assert first.api_port == 8100

    get_settings.cache_clear()

    assert get_settings().api_port == 8200


@pytest.mark.parametrize("value", ["inf", "1e20"])
def test_absurd_durations_are_validation_errors(value: str) -> None:
    assert invalid_fields(PLATFORM_MIGRATION_INITIAL_INTERVAL=value) == {
        "migration_initial_interval"
    }


def test_initial_interval_above_max_interval_rejected() -> None:
    # The default max interval is 30 s.
    assert invalid_fields(PLATFORM_MIGRATION_INITIAL_INTERVAL="60")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        pytest.param("postgresql:///platform?host=/run/postgresql", "Unix-socket", id="host-param"),
        pytest.param("postgresql://%2Frun%2Fpostgresql/platform", "Unix-socket", id="encoded"),
        pytest.param("postgresql:///platform", "Unix-socket", id="no-host"),
        pytest.param("postgresql://user:pw@/platform", "Unix-socket", id="user-no-host"),
        pytest.param("postgresql://db/platform?host=other", "host query parameter", id="host-qs"),
        pytest.param("postgresql://db/platform?hostaddr=10.0.0.1", "hostaddr", id="hostaddr"),
        pytest.param("postgresql://db-a:5432,db-b:5432/platform", "host lists", id="host-list"),
    ],
)
@pytest.mark.parametrize("variable", ["PLATFORM_DATABASE_URL", "PLATFORM_STORAGE_DATABASE_URL"])
def test_a_dsn_without_one_tcp_host_is_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, why: str
) -> None:
    monkeypatch.setenv(variable, url)

    with pytest.raises(ValidationError) as caught:
        Settings()

    message = str(caught.value)
    assert variable in message
    assert why in message
    assert "jdbcUrl" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://platform:pw@db.internal:5432/platform?sslmode=require",
        "postgresql://postgres@127.0.0.1:5555",
        "postgresql://u@[::1]:5432/platform",
    ],
)
def test_a_tcp_dsn_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PLATFORM_DATABASE_URL", url)

    assert str(Settings().database_url) == url


def test_a_signing_key_cannot_be_current_and_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_SIGNING_KEY_FILE", "/keys/a.pem")
    monkeypatch.setenv("PLATFORM_SIGNING_NEXT_KEY_FILES", '["/keys/a.pem"]')

    assert invalid_fields() == {""}


def test_body_limit_defaults_small_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().api_max_body_bytes == 64 * 1024
    assert invalid_fields(PLATFORM_API_MAX_BODY_BYTES="100") == {"api_max_body_bytes"}
