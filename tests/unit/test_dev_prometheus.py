"""`make dev`'s Prometheus: the configuration it renders, its port, and the banner's line with or
without a `prometheus` binary on the PATH (nothing is started here)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from devstack.dev import DevSettings, banner, busy_ports, make_plan
from devstack.prometheus import RULES_FILE, alerts_url, render_config, scrape_target
from tenancy.settings import Settings
from tests.support.alert_rules import promtool, run_promtool
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.usefixtures("clean_env")


def _path_with_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH whose only `prometheus` is a stub (the plan only looks it up)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    binary = bin_dir / "prometheus"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    return binary


def _dev(tmp_path: Path, prometheus_port: int = 9090) -> DevSettings:
    return DevSettings(
        data_dir=tmp_path / "devdata", worker_metrics_port=19464, prometheus_port=prometheus_port
    )


def test_the_config_scrapes_the_api_and_the_worker_and_loads_the_alert_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = promtool()  # before the PATH is narrowed to the stub
    _path_with_prometheus(tmp_path, monkeypatch)
    monkeypatch.setenv("PLATFORM_API_PORT", "18000")
    plan = make_plan(_dev(tmp_path, prometheus_port=19090), Settings())
    assert plan.prometheus is not None

    text = render_config(plan.prometheus)

    config = yaml.safe_load(text)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["external_labels"] == {"handbook_url": "http://127.0.0.1:8001"}
    assert config["rule_files"] == [str(RULES_FILE)]
    assert RULES_FILE.is_file()
    jobs = {
        job["job_name"]: (job["metrics_path"], job["static_configs"][0]["targets"])
        for job in config["scrape_configs"]
    }
    assert jobs == {
        "platform-api": ("/metrics", ["127.0.0.1:18000"]),
        "platform-worker": ("/metrics", ["127.0.0.1:19464"]),
    }
    assert plan.prometheus.command()[1:4] == [
        f"--config.file={tmp_path / 'devdata' / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'devdata' / 'prometheus'}",
        "--web.listen-address=127.0.0.1:19090",
    ]
    # Prometheus's own check reads the configuration and the rule file it names.
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(text)
    checked = run_promtool("check", "config", str(config_file), binary=tool)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


def test_a_worker_listening_on_every_interface_is_scraped_on_loopback() -> None:
    assert scrape_target("0.0.0.0:9464") == "127.0.0.1:9464"
    assert scrape_target(":9464") == "127.0.0.1:9464"
    assert scrape_target("10.0.0.7:9464") == "10.0.0.7:9464"


def test_with_the_binary_the_banner_links_the_alerts_and_the_port_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = _path_with_prometheus(tmp_path, monkeypatch)
    port = free_port()
    plan = make_plan(_dev(tmp_path, prometheus_port=port), Settings())

    assert plan.prometheus is not None
    assert plan.prometheus.command()[0] == str(binary)
    url = f"http://127.0.0.1:{port}"
    assert f"  Prometheus        {url}   (alerts: {url}/alerts)" in banner(plan, None).splitlines()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert busy_ports(plan.required_ports()) == [
            f"port {port} is in use: stop what holds it or set PLATFORM_DEV_PROMETHEUS_PORT"
        ]


def test_without_the_binary_one_banner_line_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    plan = make_plan(_dev(tmp_path), Settings())

    assert plan.prometheus is None
    lines = [line for line in banner(plan, None).splitlines() if "Prometheus" in line]
    assert lines == [
        "  Prometheus        not started: no prometheus binary on the PATH: apt-get install "
        "prometheus (Debian/Ubuntu), or the release tarball from https://prometheus.io/download/"
    ]
    assert 9090 not in {port for port, _ in plan.required_ports()}


@pytest.mark.parametrize(
    ("served", "expected"), [("/alerts", "/alerts"), ("/classic/alerts", "/classic/alerts")]
)
def test_the_banner_names_the_alerts_page_the_build_serves(served: str, expected: str) -> None:
    async def page(_: Request) -> PlainTextResponse:
        return PlainTextResponse("alerts")

    with serve(Starlette(routes=[Route(served, page)])) as url:
        assert alerts_url(url) == f"{url}{expected}"


def test_without_an_answer_the_alerts_page_is_the_usual_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert alerts_url(url, timeout=0.5) == f"{url}/alerts"


def test_a_rule_file_path_yaml_would_misread_is_kept_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with_prometheus(tmp_path, monkeypatch)
    plan = make_plan(_dev(tmp_path), Settings())
    assert plan.prometheus is not None
    # A clone in a folder whose name YAML reads as a comment or a mapping.
    rules = tmp_path / "team #2: platform" / "alerts.yml"

    config = yaml.safe_load(render_config(plan.prometheus, rules_file=rules))

    assert config["rule_files"] == [str(rules)]


def test_a_worker_metrics_address_of_the_settings_is_scraped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with_prometheus(tmp_path, monkeypatch)

    plan = make_plan(_dev(tmp_path), Settings(worker_metrics_address="0.0.0.0:19999"))

    assert plan.prometheus is not None
    assert plan.prometheus.worker_target == "127.0.0.1:19999"


def test_the_alerts_page_is_asked_of_prometheus_not_of_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def page(_: Request) -> PlainTextResponse:
        return PlainTextResponse("alerts")

    # A proxy the environment names that nothing answers: loopback is asked directly.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    with serve(Starlette(routes=[Route("/classic/alerts", page)])) as url:
        assert alerts_url(url) == f"{url}/classic/alerts"
