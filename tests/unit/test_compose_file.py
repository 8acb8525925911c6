"""docker-compose.temporal.yml checked without Docker: services, ports, commands, settings."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from api.main import create_app
from devstack.roles import build_parser
from devstack.tokens import DEV_ISSUER, IDP_KEY_NAME, SIGNING_KEY_NAME
from examples.downstream_service.settings import DownstreamSettings
from tenancy.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")

PLATFORM_PROCESSES = ("worker", "api")
DOWNSTREAM_SERVICES = ("backend-service", "auth-service")
PYTHON_SERVICES = (*PLATFORM_PROCESSES, *DOWNSTREAM_SERVICES, "keys", "db-roles")
JWKS_PATH = "/.well-known/jwks.json"
EXPECTED_SERVICES = {
    "postgresql",
    "temporal",
    "temporal-ui",
    "platform-db",
    "nats",
    "redpanda",
    *PYTHON_SERVICES,
}

REQUIRED_PLATFORM_ENV = {
    "worker": {
        "PLATFORM_DATABASE_URL",
        "PLATFORM_STORAGE_DATABASE_URL",
        "PLATFORM_DOWNSTREAM_SERVICES",
        "PLATFORM_MIGRATION_MAX_ATTEMPTS",
        "PLATFORM_MIGRATION_INITIAL_INTERVAL",
        "PLATFORM_SIGNING_KEY_FILE",
    },
}
REQUIRED_PLATFORM_ENV["api"] = {
    *REQUIRED_PLATFORM_ENV["worker"],
    "PLATFORM_API_PORT",
    "PLATFORM_AUTH_PUBLIC_KEY_FILE",
    "PLATFORM_AUTH_ISSUER",
}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment in either compose syntax (mapping or `KEY=value` list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def option(args: list[str], name: str, default: str | None = None) -> str:
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    if default is None:
        raise AssertionError(f"{name} missing from {shlex.join(args)}")
    return default


def use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *prefixes: str) -> None:
    """Make `env` the only variables with these prefixes, as in the container."""
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, for ports published on a fixed host port."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            if "published" in entry:
                ports[int(entry["published"])] = int(entry["target"])
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:
            ports[int(parts[-2])] = int(parts[-1])
    return ports


def settings_env_names(settings_class: type[BaseSettings]) -> set[str]:
    """Every environment variable the class reads, upper-cased (it is case-insensitive)."""
    config = settings_class.model_config
    assert not config.get("case_sensitive"), "names below assume case-insensitive settings"
    prefix = config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            raise AssertionError(f"{settings_class.__name__}.{field_name}: alias {alias!r}")
    return names


def module_file(module: str) -> Path | None:
    """The source file `module` names under the repository root, if there is one."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def defines(path: Path, name: str) -> bool:
    """Whether the module at `path` binds `name` at top level."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound = {node.name}
        elif isinstance(node, ast.Assign):
            bound = {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound = {node.target.id}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound = {alias.asname or alias.name.split(".")[0] for alias in node.names}
        else:
            continue
        if name in bound:
            return True
    return False


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"services missing from {COMPOSE_FILE.name}: {sorted(missing)}"


@pytest.mark.parametrize(
    ("service", "host_port", "container_port"),
    [("api", 8000, 8000), ("temporal", 7233, 7233), ("temporal-ui", 8233, 8080)],
)
def test_published_ports(
    services: dict[str, dict[str, Any]], service: str, host_port: int, container_port: int
) -> None:
    assert published_ports(services[service]).get(host_port) == container_port


def test_api_listens_on_its_published_port(services: dict[str, dict[str, Any]]) -> None:
    args = argv(services["api"])
    assert option(args, "--host") == "0.0.0.0"
    assert int(option(args, "--port")) in published_ports(services["api"]).values()


@pytest.mark.parametrize("service", PLATFORM_PROCESSES)
def test_platform_env_names_are_settings(services: dict[str, dict[str, Any]], service: str) -> None:
    used = {name for name in environment(services[service]) if name.startswith("PLATFORM_")}
    assert REQUIRED_PLATFORM_ENV[service] <= used
    unknown = used - settings_env_names(Settings)
    assert not unknown, f"{service}: not read by tenancy.settings.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("service", PLATFORM_PROCESSES)
def test_temporal_connection(services: dict[str, dict[str, Any]], service: str) -> None:
    env = environment(services[service])
    host, _, port = env["TEMPORAL_ADDRESS"].rpartition(":")
    assert host == "temporal"
    assert int(port) in published_ports(services["temporal"]).values()
    assert env["TEMPORAL_NAMESPACE"] == "default"


@pytest.mark.parametrize("service", PLATFORM_PROCESSES)
def test_env_loads_into_settings(
    services: dict[str, dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_environment(monkeypatch, environment(services[service]), "PLATFORM_", "TEMPORAL_")

    settings = Settings()

    documented_keys = {"name", "baseUrl", "dbRole"}
    raw = json.loads(environment(services[service])["PLATFORM_DOWNSTREAM_SERVICES"])
    assert [set(item) for item in raw] == [documented_keys] * len(raw)

    assert settings.temporal_address == "temporal:7233"
    assert settings.database_url is not None
    assert settings.database_url.hosts()[0]["host"] in services
    by_name = {downstream.name: downstream for downstream in settings.downstream_services}
    assert sorted(by_name) == sorted(DOWNSTREAM_SERVICES)
    for name, downstream in by_name.items():
        assert downstream.base_url is not None
        assert downstream.base_url.host == name, "the base URL must name the compose service"
        args = argv(services[name])
        assert option(args, "--name") == name
        assert downstream.base_url.port == int(option(args, "--port"))
    assert settings.signing_key_file is not None
    assert settings.signing_key_file.name == SIGNING_KEY_NAME
    if service == "api":
        assert settings.api_port == int(option(argv(services["api"]), "--port"))
        assert settings.auth_public_key_file is not None
        assert settings.auth_public_key_file.name == IDP_KEY_NAME
        assert settings.auth_jwks_url is None
        assert settings.auth_issuer == DEV_ISSUER


@pytest.mark.parametrize("service", DOWNSTREAM_SERVICES)
def test_downstream_env_loads_into_its_settings(
    services: dict[str, dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[service])
    used = {name for name in env if name.startswith("DOWNSTREAM_")}
    unknown = used - settings_env_names(DownstreamSettings)
    assert not unknown, f"{service}: not read by DownstreamSettings: {sorted(unknown)}"
    use_environment(monkeypatch, env, "DOWNSTREAM_")

    settings = DownstreamSettings()

    assert settings.service_name == service
    assert settings.database_url is not None
    assert settings.database_url.hosts()[0]["host"] == "platform-db"
    jwks = urlsplit(str(settings.platform_jwks_url))
    assert jwks.hostname == "api"
    assert jwks.port == int(option(argv(services["api"]), "--port"))
    assert jwks.path == JWKS_PATH
    host = option(argv(services[service]), "--host", default=settings.host)
    assert host == "0.0.0.0", f"{service} must listen on all interfaces to be reachable"


def test_urls_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    for service_name, service in services.items():
        for name, value in environment(service).items():
            if URL.fullmatch(value):
                host = urlsplit(value).hostname
                assert host in services, f"{service_name}: {name} points at unknown host {host}"


def test_temporal_persists_to_postgresql(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["temporal"])
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert env["DB"] == "postgres12"
    assert services[env["POSTGRES_SEEDS"]]["image"].startswith("postgres:")
    assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_command_refers_to_existing_module(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    args = argv(services[service])
    if args[0] == "uvicorn":
        module, _, attribute = args[1].partition(":")
        path = module_file(module)
        assert path is not None, f"{service}: module {module} not found"
        assert defines(path, attribute), f"{service}: {module} does not define {attribute}"
    elif args[:2] == ["python", "-m"]:
        package = ROOT.joinpath(*args[2].split("."))
        assert (package / "__main__.py").is_file() or package.with_suffix(".py").is_file(), (
            f"{service}: nothing to run for `python -m {args[2]}`"
        )
    else:
        assert args[0] == "python", f"{service}: unexpected command {shlex.join(args)}"
        assert (ROOT / args[1]).is_file(), f"{service}: {args[1]} not found"


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_python_services_build_the_repo_image(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    build = services[service]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context).resolve() == ROOT
    assert (ROOT / dockerfile).is_file()


def test_prebuilt_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository, f"{name}: {service['image']} has no tag"
        assert "/" not in tag, f"{name}: {service['image']} has no tag"
        assert tag != "latest", f"{name}: pin a version, not {service['image']}"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            healthy = spec.get("condition") == "service_healthy"
            has_healthcheck = "healthcheck" in services[target]
            assert healthy == has_healthcheck, (
                f"{name} -> {target}: condition must be service_healthy exactly when "
                f"{target} has a healthcheck"
            )


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (named volume, read-only), from short-syntax volume entries."""
    result: dict[str, tuple[str, bool]] = {}
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        result[target] = (source, mode == ["ro"])
    return result


def test_keys_are_made_once_into_a_volume_the_platform_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    args = argv(services["keys"])
    assert args[:4] == ["python", "-m", "devstack.tokens", "init"]
    keys_dir = option(args, "--dir")
    volume, read_only = mounts(services["keys"])[keys_dir]
    assert volume in compose["volumes"], "the keys must outlive the one-shot container"
    assert not read_only
    for name in PLATFORM_PROCESSES:
        service = services[name]
        assert service["depends_on"]["keys"]["condition"] == "service_completed_successfully"
        [(mount_point, (_, ro))] = [
            (target, spec) for target, spec in mounts(service).items() if spec[0] == volume
        ]
        assert ro, f"{name} needs the keys read-only"
        env = environment(service)
        assert env["PLATFORM_SIGNING_KEY_FILE"] == f"{mount_point}/{SIGNING_KEY_NAME}"
        if name == "api":
            assert env["PLATFORM_AUTH_PUBLIC_KEY_FILE"] == f"{mount_point}/{IDP_KEY_NAME}"
            assert env["PLATFORM_AUTH_ISSUER"] == DEV_ISSUER


def test_the_image_lets_its_user_write_the_keys_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    # A fresh named volume takes the owner of the image's mount point; the image runs as `app`.
    keys_dir = option(argv(services["keys"]), "--dir")
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    user_line = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    user = lines[user_line].split()[1]
    before = " ".join(lines[:user_line])
    assert f"mkdir {keys_dir}" in before
    assert f"chown {user} {keys_dir}" in before


@pytest.mark.parametrize("service", DOWNSTREAM_SERVICES)
def test_downstream_services_verify_calls_with_the_api_jwks(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    url = urlsplit(environment(services[service])["DOWNSTREAM_PLATFORM_JWKS_URL"])
    assert url.hostname == "api"
    assert url.port in published_ports(services["api"]).values()
    assert url.path in create_app().openapi()["paths"]


def roles_command(services: dict[str, dict[str, Any]]) -> Any:
    """The `db-roles` service's arguments, parsed exactly as `python -m devstack.roles` does."""
    args = argv(services["db-roles"])
    assert args[:3] == ["python", "-m", "devstack.roles"]
    return build_parser().parse_args(args[3:])


def test_db_roles_runs_with_the_superuser_before_anyone_connects(
    services: dict[str, dict[str, Any]],
) -> None:
    roles = roles_command(services)
    superuser = urlsplit(roles.superuser_url)
    db_env = environment(services["platform-db"])
    assert superuser.hostname == "platform-db"
    assert (superuser.username, superuser.password) == (
        db_env["POSTGRES_USER"],
        db_env["POSTGRES_PASSWORD"],
    )
    assert services["db-roles"]["depends_on"]["platform-db"]["condition"] == "service_healthy"
    for name in (*PLATFORM_PROCESSES, *DOWNSTREAM_SERVICES):
        assert (
            services[name]["depends_on"]["db-roles"]["condition"]
            == "service_completed_successfully"
        ), f"{name} must wait for its role and database"


@pytest.mark.parametrize("service", PLATFORM_PROCESSES)
def test_the_platform_connects_as_its_own_role_not_the_superuser(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    roles = roles_command(services)
    env = environment(services[service])
    metadata = urlsplit(env["PLATFORM_DATABASE_URL"])
    storage = urlsplit(env["PLATFORM_STORAGE_DATABASE_URL"])

    assert roles.platform is not None
    for url in (metadata, storage):
        assert (url.username, url.password) == (roles.platform.role, roles.platform.password)
        assert url.username != urlsplit(roles.superuser_url).username
    assert metadata.path == f"/{roles.metadata_db}"
    # Service roles may connect to the storage database but not to the metadata one.
    assert storage.path == f"/{roles.storage_db}"
    assert roles.storage_db != roles.metadata_db


@pytest.mark.parametrize("service", DOWNSTREAM_SERVICES)
def test_each_service_connects_as_the_role_the_platform_grants_to(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    roles = roles_command(services)
    passwords = {login.role: login.password for login in roles.service}
    platform_services = json.loads(environment(services["worker"])["PLATFORM_DOWNSTREAM_SERVICES"])
    db_role = {item["name"]: item["dbRole"] for item in platform_services}[service]
    url = urlsplit(environment(services[service])["DOWNSTREAM_DATABASE_URL"])

    assert url.hostname == "platform-db"
    assert (url.username, url.password) == (db_role, passwords[db_role])
    # Its own database, which the role owns: not the platform's, not the shared storage.
    assert url.path == f"/{db_role}"
    assert db_role not in {roles.metadata_db, roles.storage_db}


def test_service_roles_are_distinct(services: dict[str, dict[str, Any]]) -> None:
    raw = json.loads(environment(services["worker"])["PLATFORM_DOWNSTREAM_SERVICES"])
    declared = sorted(item["dbRole"] for item in raw)
    created = sorted(login.role for login in roles_command(services).service)
    assert declared == created
    assert len(set(declared)) == len(DOWNSTREAM_SERVICES)


@pytest.mark.parametrize("service", PLATFORM_PROCESSES)
def test_events_go_to_jetstream_in_the_compose_network(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    env = environment(services[service])
    url = urlsplit(env["PLATFORM_EVENTS_URL"])
    assert env["PLATFORM_EVENTS_BACKEND"] == "nats"
    assert (url.scheme, url.hostname) == ("nats", "nats")
    assert url.port in published_ports(services["nats"]).values()
    assert "-js" in argv(services["nats"]), "the relay publishes to JetStream"


def test_the_relay_waits_for_nats(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker"]["depends_on"]["nats"]["condition"] == "service_healthy"


def listeners(args: list[str], name: str) -> dict[str, tuple[str | None, int | None]]:
    """Redpanda's `--kafka-addr`-style option: listener name -> (host, port)."""
    result: dict[str, tuple[str | None, int | None]] = {}
    for entry in option(args, name).split(","):
        parts = urlsplit(entry)
        result[parts.scheme.upper()] = (parts.hostname, parts.port)
    return result


def test_redpanda_is_reachable_inside_and_outside_the_network(
    services: dict[str, dict[str, Any]],
) -> None:
    redpanda = services["redpanda"]
    args = argv(redpanda)
    bound = listeners(args, "--kafka-addr")
    advertised = listeners(args, "--advertise-kafka-addr")
    assert bound.keys() == advertised.keys()
    ports = published_ports(redpanda)
    inside = [name for name, (host, _) in advertised.items() if host == "redpanda"]
    outside = [name for name, (host, _) in advertised.items() if host == "localhost"]
    assert len(inside) == len(outside) == 1
    assert advertised[inside[0]][1] == bound[inside[0]][1]
    assert ports.get(advertised[outside[0]][1] or 0) == bound[outside[0]][1]
    # Opt-in: the default stack publishes to NATS.
    assert redpanda["profiles"] == ["kafka"]
    # The compose file's own instructions name the in-network listener.
    kafka_url = f"kafka://redpanda:{advertised[inside[0]][1]}"
    assert kafka_url in COMPOSE_FILE.read_text(encoding="utf-8")
