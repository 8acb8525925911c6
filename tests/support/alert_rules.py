"""The alert rules (ops/prometheus/alerts.yml), their promtool tests and the handbook's runbooks,
read for the alert rules' test: every name a rule or a test series uses, held to the metrics
catalogue (infra/telemetry/catalogue.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.telemetry.catalogue import by_name
from tests.support import promql

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS_FILE = REPO_ROOT / "ops" / "prometheus" / "alerts.test.yml"
RUNBOOKS_DIR = REPO_ROOT / "docs" / "runbooks"
# Prometheus's own series a rule may name: a scrape's `up`, and the alerts' state.
TARGET_LABELS = frozenset({"job", "instance"})
PROMETHEUS_SERIES: Mapping[str, frozenset[str] | None] = {
    "up": TARGET_LABELS,
    "ALERTS": None,
    "ALERTS_FOR_STATE": None,
}
# What the end of a runbook_url names: the page's directory URL (`use_directory_urls`).
_RUNBOOK_URL = re.compile(r"/runbooks/(?P<page>[a-z0-9-]+)/$")
REQUIRE_PROMTOOL = "PLATFORM_REQUIRE_PROMTOOL"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rule file."""

    group: str
    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def known_series() -> dict[str, frozenset[str] | None]:
    """Every series name a rule may select, with the labels it may use: the catalogue's
    (a scrape adds `job` and `instance`, a histogram's buckets `le`) and Prometheus's own."""
    known: dict[str, frozenset[str] | None] = dict(PROMETHEUS_SERIES)
    for series, doc in by_name().items():
        bucket = {"le"} if doc.kind == "histogram" and series.endswith("_bucket") else set()
        known[series] = frozenset(doc.labels) | TARGET_LABELS | bucket
    return known


def load_rules(path: Path = RULES_FILE) -> list[AlertRule]:
    """The alerting rules of a rule file, in order (recording rules are not read)."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return [
        AlertRule(
            group["name"],
            rule["alert"],
            rule["expr"],
            dict(rule.get("labels") or {}),
            dict(rule.get("annotations") or {}),
        )
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def rule_problems(
    path: Path = RULES_FILE, known: Mapping[str, frozenset[str] | None] | None = None
) -> list[str]:
    """Each metric or label a rule of `path` names that the platform does not export."""
    known = known if known is not None else known_series()
    found = []
    for rule in load_rules(path):
        found += promql.problems(rule.expr, known, where=f"alert {rule.name}")
    return found


def load_rule_tests(path: Path = RULE_TESTS_FILE) -> dict[str, Any]:
    """The promtool unit test file."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def series_problems(
    path: Path = RULE_TESTS_FILE, known: Mapping[str, frozenset[str] | None] | None = None
) -> list[str]:
    """Each metric or label an input series of the test file uses that is not exported."""
    known = known if known is not None else known_series()
    found = []
    for number, group in enumerate(load_rule_tests(path)["tests"], start=1):
        where = f"test group {number} ({group.get('name', 'unnamed')})"
        for series in group.get("input_series") or []:
            found += promql.problems(series["series"], known, where=where)
    return found


def alert_cases(path: Path = RULE_TESTS_FILE) -> dict[str, tuple[int, int]]:
    """Per alert name, its test cases that expect it to fire and those that expect silence."""
    cases: dict[str, tuple[int, int]] = {}
    for group in load_rule_tests(path)["tests"]:
        for case in group.get("alert_rule_test") or []:
            firing, silent = cases.get(case["alertname"], (0, 0))
            if case.get("exp_alerts"):
                firing += 1
            else:
                silent += 1
            cases[case["alertname"]] = (firing, silent)
    return cases


def runbook_page(url_template: str) -> str | None:
    """The runbook page (`docs/runbooks/<page>.md`'s stem) a runbook_url names, if any."""
    match = _RUNBOOK_URL.search(url_template)
    return match.group("page") if match else None


def runbook_pages() -> set[str]:
    """Every runbook page of the handbook, the index aside."""
    return {path.stem for path in RUNBOOKS_DIR.glob("*.md")} - {"index"}


def promtool() -> str:
    """promtool's path; the test is skipped without it, or fails when it is required."""
    return required_binary("promtool")


def required_binary(name: str) -> str:
    """The path of `name` (promtool, prometheus: Debian's prometheus package has both); the
    test is skipped without it, or fails when PLATFORM_REQUIRE_PROMTOOL=1 (CI) requires it."""
    found = shutil.which(name)
    if found is not None:
        return found
    why = (
        f"{name} is not on the PATH (Debian/Ubuntu: apt-get install prometheus; or the "
        "Prometheus release tarball)"
    )
    if os.environ.get(REQUIRE_PROMTOOL) == "1":
        pytest.fail(f"{why}, and {REQUIRE_PROMTOOL}=1 requires it")
    pytest.skip(why)


def run_promtool(*args: str, binary: str | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS` from the repository's root (`binary`: promtool found beforehand)."""
    return subprocess.run(
        [binary or promtool(), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
