"""`make dev` end to end: `python -m devstack.dev` as a real process, used as its banner says,
stopped with Ctrl-C (SIGINT), then started again on the same data."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from devstack.dev import READY_MARKER, DevSettings, make_plan
from devstack.temporal import cli_path
from examples.downstream_service.settings import DownstreamSettings
from tenancy.settings import Settings
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILDREN = {
    "postgres",
    "postgres-dedicated",
    "temporal",
    "nats",
    "backend-service",
    "auth-service",
    "worker",
    "api",
    # make dev's Prometheus, where the machine has the binary.
    *(["prometheus"] if shutil.which("prometheus") else []),
}
START_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0


class DevRun:
    """One `python -m devstack.dev`; a thread keeps reading its stdout so it never blocks."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.dev"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            encoding="utf-8",
            errors="replace",
            # Like a terminal's Ctrl-C, the test's SIGINT must reach the runner alone.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, accept: Callable[[str], bool], timeout: float = START_TIMEOUT) -> str:
        """The first stdout line `accept`s, polled until the deadline or the runner's exit."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if accept(line):
                    return line
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                tail = "\n".join(self.lines[-40:])
                raise AssertionError(
                    f"line not seen (runner exit code {code}); stderr in {self.log}; "
                    f"stdout ends with:\n{tail}"
                )
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGINT, as Ctrl-C; the runner's exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """Whatever state the test left it in: a Ctrl-C, then SIGKILL if that is not enough."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def close(self) -> None:
        """Close the pipe once every writer (the runner and its children) has gone."""
        self._reader.join(10)
        # Closing while the reader is blocked on the pipe would deadlock on its buffer lock.
        if not self._reader.is_alive() and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def _env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    # Nothing from the caller's environment may point the runner at other servers.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_"))
    }
    env["PLATFORM_DEV_DATA_DIR"] = str(data_dir)
    env["PLATFORM_API_PORT"] = str(ports["api"])
    for name in (
        "postgres",
        "dedicated_postgres",
        "temporal",
        "temporal_ui",
        "backend",
        "auth",
        "worker_metrics",
        "nats",
        "prometheus",
    ):
        env[f"PLATFORM_DEV_{name.upper()}_PORT"] = str(ports[name])
    return env


def _pids(run_dir: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in run_dir.glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie answers kill(0) but is gone.
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _wait_active(http: httpx.Client, tenant_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get(f"/api/tenants/{tenant_id}")
        assert answer.status_code == 200, answer.text
        tenant: dict[str, Any] = answer.json()
        if tenant["status"] == "ACTIVE":
            return tenant
        assert tenant["status"] in {"PROVISIONING", "MIGRATING"}, json.dumps(tenant)
        assert time.monotonic() < deadline, f"not ACTIVE within {timeout}s: {tenant}"
        time.sleep(0.2)


def _exported(run: DevRun, name: str) -> str:
    """The value of the banner's `export NAME=...` line."""
    line = run.wait_for_line(lambda text: text.strip().startswith(f"export {name}="), timeout=5)
    return line.strip().removeprefix(f"export {name}=")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tables(database_url: str, schema: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def _owners(database_url: str, query: str, *params: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return {str(name): str(owner) for name, owner in conn.execute(query, params).fetchall()}


def _kill_groups(pids: set[int]) -> None:
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.timeout(240)
def _offboard(
    api: str, tenant_id: str, token: str, read_token: str, data_dir: Path, tenants_db: str
) -> None:
    """The walkthrough's "offboard a tenant" with the banner's tokens: schedule, restore, purge with
    the backup `make dev` keeps in its data folder."""
    url = f"/api/tenants/{tenant_id}"
    with httpx.Client(base_url=api, timeout=10, trust_env=False) as http:
        refused = http.delete(url, params={"graceSeconds": 0}, headers=_bearer(read_token))
        assert refused.status_code == 403, refused.text
        http.headers.update(_bearer(token))
        scheduled = http.delete(url, params={"graceSeconds": 3600, "reason": "contract ended"})
        assert scheduled.status_code == 202, scheduled.text
        assert scheduled.json()["status"] == "DELETION_SCHEDULED"
        assert scheduled.json()["deletion"]["requestedBy"] == "operator"
        restored = http.post(f"{url}/restore")
        assert restored.status_code == 202, restored.text
        assert restored.json()["status"] == "ACTIVE"
        purged = http.delete(url, params={"graceSeconds": 0, "reason": "contract ended"})
        assert purged.status_code == 202, purged.text
        deadline = time.monotonic() + 60
        tenant = http.get(url).json()
        while tenant["status"] != "DELETED" and time.monotonic() < deadline:
            time.sleep(0.2)
            tenant = http.get(url).json()
    assert tenant["status"] == "DELETED", tenant
    assert tenant["jdbcUrl"] is None
    backup = tenant["deletion"]["backup"]
    dump = Path(backup["path"])
    assert dump.parent == (data_dir / "backups").resolve()
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == backup["sha256"]
    assert _tables(tenants_db, f"tenant_{tenant_id}") == set()


def test_make_dev_serves_the_banner_walkthrough_and_keeps_data(tmp_path: Path) -> None:
    ports = {
        name: free_port()
        # Every port its own, so a `make dev` running on this machine does not collide.
        for name in (
            "api",
            "postgres",
            "dedicated_postgres",
            "temporal",
            "temporal_ui",
            "backend",
            "auth",
            "worker_metrics",
            "nats",
            "prometheus",
        )
    }
    data_dir = tmp_path / "devdata"
    run_dir = data_dir / "run"
    env = _env(data_dir, ports)
    api = f"http://127.0.0.1:{ports['api']}"
    runs: list[DevRun] = []
    seen_pids: set[int] = set()
    log = tmp_path / "stderr.log"
    try:
        first = DevRun(env, log)
        runs.append(first)
        first.wait_for_line(lambda line: line.startswith(READY_MARKER))
        post = first.wait_for_line(lambda line: "curl -s -X POST" in line, timeout=5)
        watch = first.wait_for_line(lambda line: "curl -s http" in line, timeout=5)
        token = _exported(first, "TOKEN")
        read_token = _exported(first, "READ_TOKEN")
        banner = "\n".join(first.lines)
        assert f"{api}/docs" in banner
        assert f"{api}/console " in banner
        assert f"nats://127.0.0.1:{ports['nats']} (NATS JetStream)" in banner
        assert f"http://127.0.0.1:{ports['temporal_ui']}" in banner
        assert str(data_dir) in banner
        assert "$(make -s token SUB=" in banner
        if shutil.which("prometheus"):
            # The alerts page the banner names answers (Debian's build has only the classic UI).
            alerts = re.search(r"\(alerts: (http://127\.0\.0\.1:(\d+)\S*/alerts)\)", banner)
            assert alerts is not None
            assert int(alerts.group(2)) == ports["prometheus"]
            assert httpx.get(alerts.group(1)).status_code == 200
        else:
            assert "apt-get install prometheus" in banner
        assert f"pg-dedicated  127.0.0.1:{ports['dedicated_postgres']}  pool dedicated" in banner
        seen_pids |= set(_pids(run_dir).values())

        # Exactly what an operator pastes: the banner's URL, headers and body.
        match = re.search(
            r"curl -s -X POST (\S+) -H \"Authorization: Bearer \$TOKEN\" "
            r"-H 'Content-Type: application/json' -d '(.+)'$",
            post,
        )
        assert match is not None, post
        assert match[1] == f"{api}/api/tenants"
        body = match[2]
        tenant_id = json.loads(body)["id"]
        assert watch.strip() == (
            f'curl -s {api}/api/tenants/{tenant_id} -H "Authorization: Bearer $TOKEN"'
        )
        with httpx.Client(base_url=api, timeout=10, trust_env=False) as http:
            anonymous = http.post(
                "/api/tenants", content=body, headers={"Content-Type": "application/json"}
            )
            assert anonymous.status_code == 401, anonymous.text
            read_only = http.post(
                "/api/tenants",
                content=body,
                headers={"Content-Type": "application/json", **_bearer(read_token)},
            )
            assert read_only.status_code == 403, read_only.text
            created = http.post(
                "/api/tenants",
                content=body,
                headers={"Content-Type": "application/json", **_bearer(token)},
            )
            assert created.status_code == 202, created.text
            http.headers.update(_bearer(token))
            tenant = _wait_active(http, tenant_id)
            assert tenant["createdBy"] == "operator"
            events = http.get(f"/api/tenants/{tenant_id}/events", headers=_bearer(read_token))
            assert events.status_code == 200, events.text
            # The console the banner names, and its link to the embedded Web UI.
            page = http.get(f"/console/tenants/{tenant_id}", headers=_bearer(token))
            assert page.status_code == 200, page.text
            assert f"http://127.0.0.1:{ports['temporal_ui']}/namespaces/default/workflows/" in (
                page.text
            )
            assert events.json()["items"][0]["actor"] == "operator"
            # The banner's STANDARD tenant is on pg-shared; a PREMIUM one on pg-dedicated.
            assert tenant["storageServer"] == "pg-shared"
            assert f"//127.0.0.1:{ports['postgres']}/" in tenant["jdbcUrl"]
            premium = {
                "id": "globex",
                "name": "Globex",
                "storageMode": "DATABASE",
                "slaTier": "PREMIUM",
            }
            assert http.post("/api/tenants", json=premium).status_code == 202
            dedicated = _wait_active(http, "globex")
            assert dedicated["storageServer"] == "pg-dedicated"
            assert dedicated["jdbcUrl"] == (
                f"jdbc:postgresql://127.0.0.1:{ports['dedicated_postgres']}/tenant_globex"
            )
            # The reference service's runtime endpoint finds globex through the directory (the
            # token make dev gave it) and writes into its database on pg-dedicated.
            backend = f"http://127.0.0.1:{ports['backend']}"
            note = http.post(f"{backend}/tenants/globex/notes", json={"text": "hello"})
            assert note.status_code == 201, note.text
            notes = http.get(f"{backend}/tenants/globex/notes")
            assert [n["text"] for n in notes.json()["items"]] == ["hello"]
        # The services reached it as their own roles (their passwords from PGPASSFILE).
        dedicated_db = f"postgresql://postgres@127.0.0.1:{ports['dedicated_postgres']}"
        globex = _owners(
            f"{dedicated_db}/tenant_globex",
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s",
            "public",
        )
        assert {name: globex.get(name) for name in ("accounts", "users")} == {
            "accounts": "backend_service",
            "users": "auth_service",
        }
        roles = _owners(
            f"{dedicated_db}/postgres",
            "SELECT rolname, rolsuper::text FROM pg_roles "
            "WHERE rolname IN ('platform', 'backend_service', 'auth_service')",
        )
        assert roles == {"platform": "false", "backend_service": "false", "auth_service": "false"}

        tenants_db = f"postgresql://postgres@127.0.0.1:{ports['postgres']}/tenants"
        # backend-service's accounts/projects and auth-service's users, in the tenant schema.
        assert {"accounts", "projects", "users"} <= _tables(tenants_db, f"tenant_{tenant_id}")
        # Each made by the service's own role, in a schema the platform's role owns.
        tables = _owners(
            tenants_db,
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s",
            f"tenant_{tenant_id}",
        )
        assert {name: tables[name] for name in ("accounts", "projects", "users")} == {
            "accounts": "backend_service",
            "projects": "backend_service",
            "users": "auth_service",
        }
        schemas = _owners(
            tenants_db,
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
            f"tenant_{tenant_id}",
        )
        assert schemas == {f"tenant_{tenant_id}": "platform"}
        platform_db = tenants_db.rsplit("/", 1)[0] + "/platform"
        metadata = _owners(
            platform_db,
            "SELECT tablename, tableowner FROM pg_tables WHERE tablename = %s",
            "tenants",
        )
        assert metadata == {"tenants": "platform"}

        pids = _pids(run_dir)
        assert set(pids) == CHILDREN
        assert first.stop() == 0
        assert [name for name, pid in pids.items() if _alive(pid)] == []
        assert list(run_dir.glob("*.pid")) == []

        second = DevRun(env, log)
        runs.append(second)
        second.wait_for_line(lambda line: line.startswith(READY_MARKER))
        seen_pids |= set(_pids(run_dir).values())
        # The keys stay with the data: the first run's token still works.
        assert _exported(second, "TOKEN") != token
        with httpx.Client(base_url=api, timeout=10, trust_env=False) as http:
            again = http.get(f"/api/tenants/{tenant_id}", headers=_bearer(token))
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "ACTIVE"
        described = subprocess.run(
            [
                str(cli_path()),
                "workflow",
                "describe",
                "--workflow-id",
                f"tenant-provision-{tenant_id}",
                "--address",
                f"127.0.0.1:{ports['temporal']}",
                "--output",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # The workflow history survived in temporal.db, not only the tenant row.
        assert described.returncode == 0, described.stderr
        assert "WORKFLOW_EXECUTION_STATUS_COMPLETED" in described.stdout
        _offboard(api, tenant_id, token, read_token, data_dir, tenants_db)
        assert second.stop() == 0
    finally:
        for run in runs:
            run.kill()
        # Children of a runner that had to be SIGKILLed are orphans: end them by pid.
        _kill_groups(seen_pids | set(_pids(run_dir).values()))
        for run in runs:
            run.close()


def test_make_dev_gives_the_platform_and_each_service_a_role_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_")):
            monkeypatch.delenv(name)
    dev = DevSettings(data_dir=tmp_path, postgres_port=54444)

    plan = make_plan(dev, Settings())

    metadata = urlsplit(plan.env["PLATFORM_DATABASE_URL"])
    storage = urlsplit(plan.env["PLATFORM_STORAGE_DATABASE_URL"])
    assert (metadata.username, metadata.path, metadata.port) == ("platform", "/platform", 54444)
    assert (storage.username, storage.path) == ("platform", "/tenants")
    services = json.loads(plan.env["PLATFORM_DOWNSTREAM_SERVICES"])
    assert {s["name"]: s["dbRole"] for s in services} == {
        "backend-service": "backend_service",
        "auth-service": "auth_service",
    }
    passwords = json.loads(dev.passwords_file.read_text())
    assert dev.passwords_file.stat().st_mode & 0o077 == 0
    assert metadata.password == passwords["platform"]
    for name, role in (("backend-service", "backend_service"), ("auth-service", "auth_service")):
        env = plan.service_env(name)
        own = urlsplit(env["DOWNSTREAM_DATABASE_URL"])
        # Its password is in its password file, one line per server (tests/unit/test_dev_fleet).
        assert (own.username, own.path, own.password) == (role, f"/{role}", None)
        assert env["PGPASSFILE"] == str(tmp_path / "pgpass" / name)
    # Each of the three roles has a password of its own on each of the two servers.
    assert len(set(passwords.values())) == 6
    # The passwords are made once and kept with the data.
    assert make_plan(dev, Settings()).env == plan.env


def test_make_dev_gives_each_service_a_folder_of_extra_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_")):
            monkeypatch.delenv(name)
    dev = DevSettings(data_dir=tmp_path, postgres_port=54444)

    plan = make_plan(dev, Settings())

    for name in ("backend-service", "auth-service"):
        value = plan.service_env(name)["DOWNSTREAM_EXTRA_MIGRATIONS_DIRS"]
        # Read back as the service reads its environment.
        monkeypatch.setenv("DOWNSTREAM_EXTRA_MIGRATIONS_DIRS", value)
        folders = DownstreamSettings().extra_migrations_dirs
        assert folders == [tmp_path.resolve() / "migrations" / name]
    assert "DOWNSTREAM_EXTRA_MIGRATIONS_DIRS" not in plan.service_env()


def test_make_dev_can_call_the_reference_services_by_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_")):
            monkeypatch.delenv(name)
    # Even with lifecycle events off, the commands need the bus: make dev embeds it.
    monkeypatch.setenv("PLATFORM_EVENTS_BACKEND", "none")
    dev = DevSettings(data_dir=tmp_path, postgres_port=54444, service_transport="events")

    plan = make_plan(dev, Settings())

    assert plan.embed_nats
    assert plan.env["PLATFORM_EVENTS_URL"] == f"nats://127.0.0.1:{dev.nats_port}"
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    services = {s.name: s for s in Settings().downstream_services}
    for name in ("backend-service", "auth-service"):
        assert services[name].transport == "events"
        assert services[name].reply_key_file == dev.service_reply_key_file(name)
        env = plan.service_env(name)
        assert env["DOWNSTREAM_EVENTS_URL"] == plan.env["PLATFORM_EVENTS_URL"]
        assert env["DOWNSTREAM_REPLY_KEY_FILE"] == str(dev.service_reply_key_file(name))
    assert "DOWNSTREAM_EVENTS_URL" not in make_plan(
        DevSettings(data_dir=tmp_path, postgres_port=54444), Settings()
    ).service_env("backend-service")
