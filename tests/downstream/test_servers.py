"""The service behind real uvicorn servers: concurrent calls, and the lock across processes."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from examples.downstream_service.app import create_app
from tests.downstream.helpers import (
    Payload,
    Storage,
    history,
    migrate_path,
    subprocess_server,
    tables_in,
    threaded_server,
)
from tests.downstream.tokens import PlatformKey

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
SLOW_VERSIONS = ["slow_0001_first", "slow_0002_second"]


def _concurrently(
    base_urls: list[str], payload: Payload, platform: PlatformKey
) -> list[httpx.Response]:
    """POST the same migrate call to each URL at once, from one thread each (own tokens)."""
    start = threading.Barrier(len(base_urls))
    tenant_id = payload["tenantId"]

    def call(base_url: str) -> httpx.Response:
        headers = platform.headers(tenant_id)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            start.wait(timeout=10)
            return client.post(migrate_path(tenant_id), json=payload, headers=headers)

    with ThreadPoolExecutor(len(base_urls)) as pool:
        return list(pool.map(call, base_urls))


def _prepare_slow_migrations(folder: Path) -> Path:
    """A migration set whose first migration takes a while.

    The slow migration makes the two calls overlap, so without the lock both would see it
    pending and both would apply it.
    """
    folder.mkdir()
    (folder / "slow_0001_first.sql").write_text(
        "CREATE TABLE slow_first (id INT PRIMARY KEY);\n"
        "DO $$ BEGIN PERFORM pg_sleep(0.5); END $$;\n"
    )
    (folder / "slow_0002_second.sql").write_text(
        "-- depends: slow_0001_first\nCREATE TABLE slow_second (id INT PRIMARY KEY);\n"
    )
    return folder


def test_healthz_over_http(storage: Storage, platform: PlatformKey) -> None:
    app = create_app(platform.settings(storage.service_url(), service_name="auth-service"))
    with threaded_server(app) as base_url:
        response = httpx.get(f"{base_url}/healthz")
    assert response.json() == {"status": "ok", "service": "auth-service"}


def test_concurrent_calls_both_succeed_and_apply_each_migration_once(
    schema_tenant: Payload, storage: Storage, tmp_path: Path, platform: PlatformKey
) -> None:
    # One process: the lock is each call's transaction's, not the process's.
    migrations = _prepare_slow_migrations(tmp_path / "slow")
    app = create_app(platform.settings(storage.service_url(), migrations_dir=migrations))
    with threaded_server(app) as base_url:
        responses = _concurrently([base_url, base_url], schema_tenant, platform)

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    bodies: list[dict[str, Any]] = [r.json() for r in responses]
    assert {body["version"] for body in bodies} == {SLOW_VERSIONS[-1]}
    # The lock holder applies everything pending; whoever comes second finds nothing to do.
    assert sorted((body["applied"] for body in bodies), key=len) == [[], SLOW_VERSIONS]
    log = history(storage.superuser_url, storage.database, schema_tenant["schema"])
    assert Counter(log) == Counter(SLOW_VERSIONS)


def test_real_server_migrates_the_backend_set(
    schema_tenant: Payload, storage: Storage, platform: PlatformKey
) -> None:
    app = create_app(platform.settings(storage.service_url()))
    tenant_id = schema_tenant["tenantId"]
    with threaded_server(app) as base_url, httpx.Client(base_url=base_url) as client:
        path = migrate_path(tenant_id)
        # A retry repeats the idempotency key but, as the platform does, with a new token.
        first = client.post(path, json=schema_tenant, headers=platform.headers(tenant_id, key="k1"))
        retry = client.post(path, json=schema_tenant, headers=platform.headers(tenant_id, key="k1"))

    assert first.json() == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert retry.json() == {"version": BACKEND_VERSIONS[-1], "applied": []}
    assert {"accounts", "projects"} <= tables_in(
        storage.superuser_url, storage.database, schema_tenant["schema"]
    )


def test_lock_holds_across_processes(
    schema_tenant: Payload, storage: Storage, tmp_path: Path, platform: PlatformKey
) -> None:
    migrations = _prepare_slow_migrations(tmp_path / "slow")
    settings = platform.settings(storage.service_url(), migrations_dir=migrations)
    env = {
        "DOWNSTREAM_DATABASE_URL": storage.service_url(),
        "DOWNSTREAM_MIGRATIONS_DIR": str(migrations),
        "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE": str(platform.public_file),
    }
    with (
        threaded_server(create_app(settings)) as in_process,
        subprocess_server("backend-service", env, tmp_path / "service.log") as (other, _),
    ):
        responses = _concurrently([in_process, other], schema_tenant, platform)

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    bodies = sorted((r.json() for r in responses), key=lambda body: len(body["applied"]))
    assert bodies == [
        {"version": SLOW_VERSIONS[-1], "applied": []},
        {"version": SLOW_VERSIONS[-1], "applied": SLOW_VERSIONS},
    ]
    schema = schema_tenant["schema"]
    assert history(storage.superuser_url, storage.database, schema) == SLOW_VERSIONS
    assert {"slow_first", "slow_second"} <= tables_in(
        storage.superuser_url, storage.database, schema
    )
