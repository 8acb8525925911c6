"""`make dev`'s Prometheus: when a `prometheus` binary is on the PATH, it scrapes the API and the
worker every 5 s (jobs `platform-api` and `platform-worker`, as a deployment's must be named)
and evaluates the alert rules of ops/prometheus/alerts.yml, so their state shows at
http://127.0.0.1:9090/alerts (Debian's build: /classic/alerts) while you work. Its
configuration is rendered on every start from ops/prometheus/prometheus.dev.yml into the data
folder, its time series kept in `.devdata/prometheus`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATE = REPO_ROOT / "ops" / "prometheus" / "prometheus.dev.yml"
RULES_FILE = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "5s"
# `make docs-serve`: where the alerts' runbook links point under make dev.
HANDBOOK_URL = "http://127.0.0.1:8001"
HOW_TO_GET = (
    "no prometheus binary on the PATH: apt-get install prometheus (Debian/Ubuntu), or the "
    "release tarball from https://prometheus.io/download/"
)


@dataclass(frozen=True)
class DevPrometheus:
    """Where make dev's Prometheus listens, what it scrapes and where it keeps its files."""

    binary: str
    port: int
    data_dir: Path
    api_target: str
    worker_target: str

    @property
    def url(self) -> str:
        """Its web UI's address."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        """The rendered configuration."""
        return self.data_dir / "prometheus.yml"

    @property
    def storage_dir(self) -> Path:
        """Its time series database."""
        return self.data_dir / "prometheus"

    def command(self) -> list[str]:
        """The server on loopback, quiet unless something is wrong."""
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.storage_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=7d",
            "--log.level=warn",
        ]


def alerts_url(base: str, timeout: float = 1.0) -> str:
    """The alerts page of the Prometheus at `base`: `/alerts`, or `/classic/alerts` where the
    build serves only the classic UI (Debian's package: its React UI is not packaged). Proxies
    are ignored: make dev's Prometheus is on loopback."""
    for path in ("/alerts", "/classic/alerts"):
        try:
            answer = httpx.get(f"{base}{path}", timeout=timeout, trust_env=False)
            if answer.status_code == httpx.codes.OK:
                return f"{base}{path}"
        except httpx.HTTPError:
            break
    return f"{base}/alerts"


def find_binary() -> str | None:
    """The `prometheus` binary on the PATH, if there is one."""
    return shutil.which("prometheus")


def scrape_target(address: str) -> str:
    """`host:port` to scrape a process that listens on `address` (a wildcard host is
    reached on loopback)."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def render_config(
    prometheus: DevPrometheus,
    *,
    template: Path = CONFIG_TEMPLATE,
    rules_file: Path = RULES_FILE,
    scrape_interval: str = SCRAPE_INTERVAL,
    handbook_url: str = HANDBOOK_URL,
) -> str:
    """The configuration from the template: the two scrape jobs, the rule file, the
    handbook's URL for the alerts' runbook links."""
    return Template(template.read_text()).substitute(
        scrape_interval=scrape_interval,
        handbook_url=handbook_url,
        # Quoted: a clone's path may hold what YAML reads as a comment (` #`) or a key (`: `).
        rules_file=json.dumps(str(rules_file)),
        api_target=prometheus.api_target,
        worker_target=prometheus.worker_target,
    )


def write_config(prometheus: DevPrometheus) -> Path:
    """Render the configuration into the data folder; its path."""
    prometheus.data_dir.mkdir(parents=True, exist_ok=True)
    prometheus.storage_dir.mkdir(parents=True, exist_ok=True)
    prometheus.config_file.write_text(render_config(prometheus))
    return prometheus.config_file
