"""`make dev`'s two storage servers (`pg-shared`, `pg-dedicated`) and the reference services'
password files: the plan and the files, without starting anything."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack import passfile
from devstack.dev import DevSettings, banner, make_plan, platform_settings, write_passfile
from devstack.roles import Login
from tenancy.models import SlaTier
from tenancy.settings import Settings

SERVICES = {"backend-service": "backend_service", "auth-service": "auth_service"}


def _dev(tmp_path: Path) -> DevSettings:
    return DevSettings(data_dir=tmp_path, postgres_port=54444, dedicated_postgres_port=54445)


@pytest.mark.usefixtures("clean_env")
def test_make_dev_places_premium_tenants_on_a_dedicated_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan(_dev(tmp_path), Settings())

    servers = json.loads(plan.env["PLATFORM_STORAGE_SERVERS"])
    assert [(s["name"], s["pool"], s["maxTenants"]) for s in servers] == [
        ("pg-shared", "shared", 1000),
        ("pg-dedicated", "dedicated", 50),
    ]
    assert servers[0]["url"] == plan.env["PLATFORM_STORAGE_DATABASE_URL"]
    dedicated = urlsplit(servers[1]["url"])
    assert (dedicated.username, dedicated.port, dedicated.path) == ("platform", 54445, "/tenants")
    assert json.loads(plan.env["PLATFORM_PLACEMENT"]) == {
        "BASIC": "shared",
        "STANDARD": "shared",
        "PREMIUM": "dedicated",
    }
    # The platform reads them as the worker and the API do.
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert [s.name for s in settings.storage_fleet()] == ["pg-shared", "pg-dedicated"]
    assert settings.pool_of(SlaTier.PREMIUM) == "dedicated"
    assert settings.pool_of(SlaTier.BASIC) == "shared"
    # Both embedded and supervised, on ports of their own, the second's data beside the first's.
    assert [(p.spec.name, p.spec.port, p.spec.child) for p in plan.postgres] == [
        ("pg-shared", 54444, "postgres"),
        ("pg-dedicated", 54445, "postgres-dedicated"),
    ]
    assert (54445, "PLATFORM_DEV_DEDICATED_POSTGRES_PORT") in plan.required_ports()
    assert plan.postgres_dir(plan.postgres[1].spec) == tmp_path / "postgres-dedicated"
    shared, storage_only = (p.layout for p in plan.postgres)
    assert (shared.metadata_database, shared.storage_database) == ("platform", "tenants")
    assert (storage_only.metadata_database, storage_only.storage_database) == ("tenants", "tenants")
    assert storage_only.platform is not None
    assert shared.platform is not None
    assert storage_only.platform.role == shared.platform.role == "platform"
    assert storage_only.platform.password == dedicated.password
    assert [s.role for s in storage_only.services] == list(SERVICES.values())
    # A password of one server opens nothing on the other.
    first = {shared.platform.password, *(s.password for s in shared.services)}
    second = {storage_only.platform.password, *(s.password for s in storage_only.services)}
    assert first.isdisjoint(second)
    assert len(first) == len(second) == 3


@pytest.mark.usefixtures("clean_env")
def test_the_operators_fleet_and_placement_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = json.dumps(
        [{"name": "pg-a", "url": "postgresql://platform@db.internal/tenants", "maxTenants": 9}]
    )
    monkeypatch.setenv("PLATFORM_STORAGE_SERVERS", theirs)

    plan = make_plan(_dev(tmp_path), Settings())

    assert plan.env["PLATFORM_STORAGE_SERVERS"] == theirs
    assert "PLATFORM_PLACEMENT" not in plan.env
    assert [p.spec.name for p in plan.postgres] == ["pg-shared"]
    assert 54445 not in {port for port, _ in plan.required_ports()}

    monkeypatch.delenv("PLATFORM_STORAGE_SERVERS")
    # Their placement over make dev's pools: BASIC tenants get dedicated servers too.
    theirs = '{"BASIC": "dedicated", "STANDARD": "shared", "PREMIUM": "dedicated"}'
    monkeypatch.setenv("PLATFORM_PLACEMENT", theirs)
    plan = make_plan(_dev(tmp_path), platform_settings())

    assert plan.env["PLATFORM_PLACEMENT"] == theirs
    assert len(json.loads(plan.env["PLATFORM_STORAGE_SERVERS"])) == 2
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    assert Settings().pool_of(SlaTier.BASIC) == "dedicated"


@pytest.mark.usefixtures("clean_env")
def test_an_external_storage_database_gets_no_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLATFORM_STORAGE_DATABASE_URL", "postgresql://platform@db.internal/t")

    plan = make_plan(_dev(tmp_path), Settings())

    assert "PLATFORM_STORAGE_SERVERS" not in plan.env
    assert [p.spec.name for p in plan.postgres] == ["pg-shared"]


@pytest.mark.usefixtures("clean_env")
def test_each_service_finds_its_passwords_by_host_in_a_password_file(tmp_path: Path) -> None:
    plan = make_plan(_dev(tmp_path), Settings())
    shared, dedicated = (p.layout for p in plan.postgres)

    for name in SERVICES:
        write_passfile(plan, name)

    for index, (name, role) in enumerate(SERVICES.items()):
        env = plan.service_env(name)
        own = urlsplit(env["DOWNSTREAM_DATABASE_URL"])
        # No password in the URL: libpq then takes it from PGPASSFILE.
        assert (own.username, own.password, own.port, own.path) == (role, None, 54444, f"/{role}")
        path = Path(env["PGPASSFILE"])
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().splitlines() == [
            f"127.0.0.1:54444:*:{role}:{shared.services[index].password}",
            f"127.0.0.1:54445:*:{role}:{dedicated.services[index].password}",
        ]
    assert (
        plan.service_env("backend-service")["PGPASSFILE"]
        != (plan.service_env("auth-service")["PGPASSFILE"])
    )
    # The platform's own URLs keep their passwords; it never reads a password file.
    assert urlsplit(plan.env["PLATFORM_DATABASE_URL"]).password == shared.platform.password  # type: ignore[union-attr]
    # Kept in step with the passwords: written again, the same lines.
    before = Path(plan.service_env("auth-service")["PGPASSFILE"]).read_text()
    write_passfile(make_plan(_dev(tmp_path), Settings()), "auth-service")
    assert Path(plan.service_env("auth-service")["PGPASSFILE"]).read_text() == before


def test_a_password_file_line_escapes_colons_and_backslashes(tmp_path: Path) -> None:
    login = Login("backend_service", "a:b\\c")

    line = passfile.line("127.0.0.1", 5432, login)

    assert line == "127.0.0.1:5432:*:backend_service:a\\:b\\\\c"
    path = tmp_path / "sub" / "pgpass"
    passfile.write(path, [line, passfile.line("::1", 6543, Login("x_y", "p"), database="db")])
    assert path.stat().st_mode & 0o777 == 0o600
    # An IPv6 host's colons too.
    assert path.read_text() == f"{line}\n\\:\\:1:6543:db:x_y:p\n"


@pytest.mark.usefixtures("clean_env")
def test_the_banner_names_both_storage_servers(tmp_path: Path) -> None:
    plan = make_plan(_dev(tmp_path), Settings())

    text = banner(plan, None)

    assert "pg-shared     127.0.0.1:54444  pool shared (BASIC, STANDARD)" in text
    assert "pg-dedicated  127.0.0.1:54445  pool dedicated (PREMIUM)" in text
