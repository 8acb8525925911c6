"""Extra migrations folders (`DOWNSTREAM_EXTRA_MIGRATIONS_DIRS`): a service gains a migration
without a code change, read at start-up, merged with the built-in set in file-name order."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.downstream_service.__main__ import main
from examples.downstream_service.app import create_app
from examples.downstream_service.migrator import (
    MigrationSetInvalid,
    Migrator,
    load_migrations,
)
from examples.downstream_service.models import parse_jdbc_url
from examples.downstream_service.pools import StoragePools
from examples.downstream_service.settings import MIGRATIONS_ROOT, DownstreamSettings
from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    history,
    migrate_path,
    subprocess_server,
    tables_in,
)
from tests.downstream.tokens import PlatformKey

BACKEND = MIGRATIONS_ROOT / "backend-service"
BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
NEW = "backend_0003_project_labels"
NEW_SQL = "-- depends: backend_0001_accounts_projects\nCREATE TABLE project_labels (id INT);\n"


def _write(folder: Path, name: str, text: str = "SELECT 1;\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _ship_new_migration(folder: Path) -> None:
    _write(folder, f"{NEW}.sql", NEW_SQL)
    _write(folder, f"{NEW}.rollback.sql", "DROP TABLE project_labels;\n")


async def _migrate(
    client: httpx.AsyncClient, platform: PlatformKey, payload: Payload
) -> dict[str, Any]:
    tenant_id = payload["tenantId"]
    response = await client.post(
        migrate_path(tenant_id), json=payload, headers=platform.headers(tenant_id)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_extra_folders_merge_with_the_built_in_set_in_file_name_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first, "backend_0004_later.sql")
    _ship_new_migration(second)

    migrations = load_migrations(BACKEND, [first, second])

    assert [m.id for m in migrations] == [*BACKEND_VERSIONS, NEW, "backend_0004_later"]
    assert migrations[2].rollback_script == "DROP TABLE project_labels;\n"
    assert migrations[2].depends == ("backend_0001_accounts_projects",)


def test_an_empty_extra_folder_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_migrations(BACKEND, [tmp_path / "empty"]) == load_migrations(BACKEND)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (
            {"a": ["backend_0002_project_archiving.sql"]},
            r"extra migration .*a/backend_0002_project_archiving\.sql clashes with the built-in "
            r"migration .*backend-service/backend_0002_project_archiving\.sql",
        ),
        (
            {"a": [f"{NEW}.sql"], "b": [f"{NEW}.sql"]},
            rf"extra migration .*b/{NEW}\.sql clashes with the extra migration .*a/{NEW}\.sql",
        ),
        (
            {"a": ["0003_labels.sql"]},
            r"extra migration .*0003_labels\.sql sorts before the built-in migration "
            r"backend_0002_project_archiving\.sql",
        ),
    ],
    ids=["clash-with-built-in", "clash-between-extras", "sorts-before-built-in"],
)
async def test_a_broken_set_stops_the_start_up_with_the_reason(
    tmp_path: Path, platform: PlatformKey, files: dict[str, list[str]], reason: str
) -> None:
    for folder, names in files.items():
        for name in names:
            _write(tmp_path / folder, name)
    folders = [tmp_path / folder for folder in files]
    app = create_app(platform.settings(None, extra_migrations_dirs=folders))
    with pytest.raises(MigrationSetInvalid, match=reason):
        async with app.router.lifespan_context(app):
            pass


async def test_a_missing_extra_folder_stops_the_start_up(
    tmp_path: Path, platform: PlatformKey
) -> None:
    app = create_app(platform.settings(None, extra_migrations_dirs=[tmp_path / "missing"]))
    with pytest.raises(FileNotFoundError, match="missing"):
        async with app.router.lifespan_context(app):
            pass


def test_command_line_exits_with_the_clash_before_serving(
    tmp_path: Path,
    platform: PlatformKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(tmp_path / "extra", "backend_0001_accounts_projects.sql")
    monkeypatch.setenv("DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE", str(platform.public_file))
    monkeypatch.setenv("DOWNSTREAM_EXTRA_MIGRATIONS_DIRS", str(tmp_path / "extra"))
    with pytest.raises(SystemExit) as exit_:
        main(["--name", "backend-service", "--port", "1"])
    assert exit_.value.code == 2
    assert "clashes with the built-in migration" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["json", "path-separator"])
def test_the_environment_names_several_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str
) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    value = (
        '["' + '", "'.join(map(str, folders)) + '"]'
        if form == "json"
        else os.pathsep.join(map(str, folders))
    )
    monkeypatch.setenv("DOWNSTREAM_EXTRA_MIGRATIONS_DIRS", value)
    assert DownstreamSettings().extra_migrations_dirs == folders


def test_no_extra_folders_by_default() -> None:
    assert DownstreamSettings().extra_migrations_dirs == []


async def test_a_restart_picks_up_a_new_migration_and_applies_just_it(
    platform: PlatformKey,
    schema_tenant: Payload,
    neighbour_tenant: Payload,
    storage: Storage,
    tmp_path: Path,
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    settings = platform.settings(storage.service_url(), extra_migrations_dirs=[extra])
    async with app_client(settings) as client:
        first = await _migrate(client, platform, schema_tenant)
        # A tenant at the newest version: a no-op that answers 200 with the same version.
        up_to_date = await _migrate(client, platform, schema_tenant)
        _ship_new_migration(extra)
        # Read at start-up only: the running service does not know the new file yet.
        before_restart = await _migrate(client, platform, schema_tenant)
    assert first == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert up_to_date == before_restart == {"version": BACKEND_VERSIONS[-1], "applied": []}
    assert "project_labels" not in tables_in(url, database, schema)

    async with app_client(settings) as client:
        existing = await _migrate(client, platform, schema_tenant)
        again = await _migrate(client, platform, schema_tenant)
        newcomer = await _migrate(client, platform, neighbour_tenant)

    assert existing == {"version": NEW, "applied": [NEW]}
    assert again == {"version": NEW, "applied": []}
    assert newcomer == {"version": NEW, "applied": [*BACKEND_VERSIONS, NEW]}
    assert "project_labels" in tables_in(url, database, schema)
    assert history(url, database, schema) == [*BACKEND_VERSIONS, NEW]

    # The extra folder's rollback file undoes it like a built-in one.
    pools = StoragePools(
        database_url=storage.service_url(),
        application_name="backend-service",
        connect_timeout=timedelta(seconds=5),
        max_size=1,
        max_pools=1,
        max_idle=timedelta(seconds=60),
    )
    migrator = Migrator(
        service_name="backend-service",
        migrations=load_migrations(BACKEND, [extra]),
        pools=pools,
        lock_timeout=timedelta(seconds=5),
    )
    try:
        undone = migrator.rollback(
            parse_jdbc_url(schema_tenant["jdbcUrl"]), schema, BACKEND_VERSIONS[-1]
        )
    finally:
        pools.close()
    assert undone == [NEW]
    assert "project_labels" not in tables_in(url, database, schema)
    assert history(url, database, schema) == BACKEND_VERSIONS


def test_a_restarted_process_reads_the_folder_from_its_environment(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage, tmp_path: Path
) -> None:
    """As `make dev` runs it: the folder named in the environment, the service restarted."""
    extra = tmp_path / "extra"
    extra.mkdir()
    env = {
        "DOWNSTREAM_DATABASE_URL": storage.service_url(),
        "DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE": str(platform.public_file),
        "DOWNSTREAM_EXTRA_MIGRATIONS_DIRS": f'["{extra}"]',
    }
    tenant_id = schema_tenant["tenantId"]
    bodies = []
    for run in ("before", "after"):
        if run == "after":
            _ship_new_migration(extra)
        with subprocess_server("backend-service", env, tmp_path / f"{run}.log") as (url, _):
            response = httpx.post(
                f"{url}{migrate_path(tenant_id)}",
                json=schema_tenant,
                headers=platform.headers(tenant_id),
                timeout=30,
            )
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    assert bodies == [
        {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS},
        {"version": NEW, "applied": [NEW]},
    ]
