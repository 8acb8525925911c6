"""A refused setting never shows a password: not in pydantic's error, not in the traceback a
refusing worker or API prints, not in the start-up lines that describe where things are."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import AnyHttpUrl, ValidationError
from pydantic_settings import SettingsError

from devstack.dev import DevSettings, banner, make_plan
from tenancy.settings import DownstreamService, Settings, without_password
from tests.support.processes import child_env

PASSWORD = "s3cret-Pa55"
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_env")


def _services(*services: Mapping[str, object]) -> str:
    return json.dumps(list(services))


EVENTS_SERVICE = {"name": "billing", "transport": "events", "replyKeyFile": "/keys/b.pem"}

# Every setting that holds a URL, each with a value it refuses and a password in it.
REFUSED = {
    "database-host-list": {"PLATFORM_DATABASE_URL": f"postgresql://u:{PASSWORD}@h1,h2/db"},
    "database-socket": {"PLATFORM_DATABASE_URL": f"postgresql://u:{PASSWORD}@/db?host=/run"},
    "database-bad-port": {"PLATFORM_DATABASE_URL": f"postgresql://u:{PASSWORD}@h:99999/db"},
    "database-not-postgres": {"PLATFORM_DATABASE_URL": f"mysql://u:{PASSWORD}@h:3306/db"},
    "storage-host-list": {"PLATFORM_STORAGE_DATABASE_URL": f"postgresql://u:{PASSWORD}@a,b/s"},
    "storage-bad-port": {"PLATFORM_STORAGE_DATABASE_URL": f"postgresql://u:{PASSWORD}@h:x/s"},
    "events-url-not-nats": {
        "PLATFORM_EVENTS_URL": f"http://u:{PASSWORD}@bus:4222",
        "PLATFORM_DOWNSTREAM_SERVICES": _services(EVENTS_SERVICE),
    },
    "service-base-url-not-http": {
        "PLATFORM_DOWNSTREAM_SERVICES": _services(
            {"name": "billing", "baseUrl": f"ftp://u:{PASSWORD}@billing:21"}
        )
    },
    "service-base-url-bad-port": {
        "PLATFORM_DOWNSTREAM_SERVICES": _services(
            {"name": "billing", "baseUrl": f"http://u:{PASSWORD}@billing:99999"}
        )
    },
    "service-other-field-refused": {
        "PLATFORM_DOWNSTREAM_SERVICES": _services(
            {"name": "Billing", "baseUrl": f"http://u:{PASSWORD}@billing:9000"}
        )
    },
    "storage-server-socket": {
        "PLATFORM_STORAGE_SERVERS": _services(
            {"name": "pg-a", "url": f"postgresql://u:{PASSWORD}@/t", "maxTenants": 5}
        )
    },
    "storage-server-bad-name": {
        "PLATFORM_STORAGE_SERVERS": _services(
            {"name": "PG_A", "url": f"postgresql://u:{PASSWORD}@db:5432/t", "maxTenants": 5}
        )
    },
    "storage-servers-duplicate": {
        "PLATFORM_STORAGE_SERVERS": _services(
            {"name": "pg-a", "url": f"postgresql://u:{PASSWORD}@a:5432/t", "maxTenants": 5},
            {"name": "pg-a", "url": f"postgresql://u:{PASSWORD}@b:5432/t", "maxTenants": 5},
        )
    },
    "placement-to-a-pool-without-servers": {
        "PLATFORM_STORAGE_SERVERS": _services(
            {"name": "pg-a", "url": f"postgresql://u:{PASSWORD}@a:5432/t", "maxTenants": 5}
        ),
        "PLATFORM_PLACEMENT": '{"PREMIUM": "dedicated"}',
    },
    "jwks-url-not-http": {"PLATFORM_AUTH_JWKS_URL": f"ftp://u:{PASSWORD}@idp/jwks"},
    "temporal-ui-url-not-http": {"PLATFORM_TEMPORAL_UI_URL": f"ftp://u:{PASSWORD}@ui:8233"},
    # A refusal elsewhere: the model-level error carries every value it was given.
    "model-error-beside-good-urls": {
        "PLATFORM_DATABASE_URL": f"postgresql://u:{PASSWORD}@db:5432/platform",
        "PLATFORM_STORAGE_DATABASE_URL": f"postgresql://u:{PASSWORD}@db:5432/storage",
        "PLATFORM_EVENTS_URL": f"nats://u:{PASSWORD}@bus:4222",
        "PLATFORM_DOWNSTREAM_SERVICES": _services(
            {"name": "auth", "baseUrl": f"http://u:{PASSWORD}@a:1"},
            {"name": "auth", "baseUrl": f"http://u:{PASSWORD}@b:2"},
        ),
    },
    "field-error-beside-good-urls": {
        "PLATFORM_DATABASE_URL": f"postgresql://u:{PASSWORD}@db:5432/platform",
        "PLATFORM_API_PORT": "0",
    },
}


@pytest.mark.parametrize("env", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_url_setting_never_shows_its_password(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)
    # Still says which setting to fix.
    assert caught.value.error_count() >= 1


def test_unparsable_services_json_never_shows_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PLATFORM_DOWNSTREAM_SERVICES", f'[{{"name": "b", "baseUrl": "http://u:{PASSWORD}@b"'
    )

    with pytest.raises(SettingsError) as caught:
        Settings()

    shown = f"{caught.value!s} {caught.value.__cause__!s}"
    assert "downstream_services" in shown
    assert PASSWORD not in shown


def test_a_service_described_for_the_logs_shows_no_password() -> None:
    service = DownstreamService(
        name="billing", base_url=AnyHttpUrl(f"https://ops:{PASSWORD}@billing.internal:9000/v1")
    )

    described = service.describe()

    assert PASSWORD not in described
    assert described == "https://ops:***@billing.internal:9000/v1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{PASSWORD}@db:5432/p", "postgresql://u:***@db:5432/p"),
        (f"nats://u:{PASSWORD}@bus:4222", "nats://u:***@bus:4222"),
        (f"nats://token-{PASSWORD}@bus:4222", "nats://***@bus:4222"),
        ("nats://bus:4222", "nats://bus:4222"),
        ("http://u@h:1/x", "http://u@h:1/x"),
        (f"postgresql://u:{PASSWORD}@h/p?password={PASSWORD}", "postgresql://u:***@h/p?***"),
    ],
)
def test_without_password_masks_only_the_secret(url: str, shown: str) -> None:
    assert without_password(url) == shown


def test_the_make_dev_banner_shows_the_events_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLATFORM_EVENTS_URL", f"nats://ops:{PASSWORD}@bus.internal:4222")
    plan = make_plan(DevSettings(data_dir=tmp_path), Settings())

    text = banner(plan, None)

    assert "nats://ops:***@bus.internal:4222" in text
    assert PASSWORD not in text


BAD_DSN = f"postgresql://u:{PASSWORD}@h1,h2/db"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([sys.executable, "worker.py"], id="worker"),
        pytest.param([sys.executable, "-m", "uvicorn", "api.main:app", "--port", "0"], id="api"),
        pytest.param([sys.executable, "-m", "reconciliation"], id="reconciler"),
    ],
)
def test_a_process_refusing_a_dsn_prints_no_password(argv: list[str]) -> None:
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=child_env(PLATFORM_DATABASE_URL=BAD_DSN),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "PLATFORM_DATABASE_URL must name one PostgreSQL server" in output
    assert PASSWORD not in output
