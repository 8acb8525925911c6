"""The alert rules (ops/prometheus/alerts.yml): promtool accepts them and their unit tests pass,
every name they use is one the platform exports (infra/telemetry/catalogue.py), every alert
has a runbook page and test cases that see it fire and stay silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenancy.rollouts import RolloutStatus
from tenancy.status import TenantStatus
from tests.support import promql
from tests.support.alert_rules import (
    RULE_TESTS_FILE,
    RULES_FILE,
    RUNBOOKS_DIR,
    alert_cases,
    known_series,
    load_rule_tests,
    load_rules,
    rule_problems,
    run_promtool,
    runbook_page,
    runbook_pages,
    series_problems,
)

# The label values the code serves, where a typo would make a rule select nothing.
STATUS_VALUES = {
    "platform_tenants": {s.value for s in TenantStatus},
    "platform_tenants_oldest_seconds": {s.value for s in TenantStatus},
    "platform_rollouts": {s.value for s in RolloutStatus},
}
TRANSITIONAL = {"PROVISIONING", "MIGRATING", "DELETING", "MOVING"}


def test_promtool_accepts_the_rule_file() -> None:
    checked = run_promtool("check", "rules", str(RULES_FILE))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in checked.stdout


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    tested = run_promtool("test", "rules", str(RULE_TESTS_FILE))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_names_only_metrics_and_labels_the_platform_exports() -> None:
    assert rule_problems() == []


def test_every_test_series_is_one_the_platform_exports() -> None:
    assert series_problems() == []
    series = [s["series"] for g in load_rule_tests()["tests"] for s in g["input_series"]]
    assert len(series) > 20


def test_a_rule_naming_an_unexported_metric_or_label_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        """
groups:
  - name: bad
    rules:
      - alert: Misspelt
        expr: max by (status) (platform_tenant{status="PROVISIONING"}) > 0
      - alert: WrongLabel
        expr: sum by (tier) (rate(platform_provisions_finished{result="ACTIVE", tier="X"}[5m]))
      - alert: WrongBucketLabel
        expr: histogram_quantile(0.9, sum(rate(platform_api_requests_total[5m])) by (le))
      - alert: Fine
        expr: sum without (instance) (up{job="platform-api"}) == 0
"""
    )

    found = rule_problems(bad)

    assert found == [
        "alert Misspelt: metric 'platform_tenant' is not exported by the platform",
        "alert WrongLabel: label 'tier' is not a label of platform_provisions_finished "
        "(instance, job, result, sla_tier, storage_mode)",
        "alert WrongLabel: by (tier) names a label that platform_provisions_finished lacks",
        "alert WrongBucketLabel: by (le) names a label that platform_api_requests_total lacks",
    ]


def test_the_reader_finds_every_selector_and_clause() -> None:
    expr = """
        histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{x="1", y=~"b|c"}[5m])))
        > on () group_left (z) max(b offset 15m) without (w) / {__name__="c"} and bool 1e3
    """

    found = promql.selectors(expr)
    grouped = promql.clauses(expr)

    assert [(s.metric, s.matchers) for s in found] == [
        ("a_bucket", (("x", "=", "1"), ("y", "=~", "b|c"))),
        ("b", ()),
        ("c", (("__name__", "=", "c"),)),
    ]
    assert found[0].values("y") == ["b", "c"]
    assert [(c.keyword, c.labels, c.metrics) for c in grouped] == [
        ("by", ("le", "route"), ("a_bucket",)),
        ("on", (), ("a_bucket", "b", "c")),
        ("group_left", ("z",), ("a_bucket", "b", "c")),
        ("without", ("w",), ("b",)),
    ]
    with pytest.raises(promql.PromQLSyntaxError):
        promql.tokenize("up{job='a'} ? 1")


def test_every_status_a_rule_or_a_test_selects_is_one_the_code_has() -> None:
    exprs = [rule.expr for rule in load_rules()] + [
        s["series"] for g in load_rule_tests()["tests"] for s in g["input_series"]
    ]
    unknown = [
        (selector.metric, value)
        for expr in exprs
        for selector in promql.selectors(expr)
        if selector.metric in STATUS_VALUES
        for value in selector.values("status")
        if value not in STATUS_VALUES[selector.metric]
    ]
    assert unknown == []


def test_the_stuck_rule_watches_the_transitional_statuses_but_not_the_grace_period() -> None:
    (stuck,) = [rule for rule in load_rules() if rule.name == "PlatformTenantStuck"]
    watched = {
        value
        for selector in promql.selectors(stuck.expr)
        if selector.metric == "platform_tenants_oldest_seconds"
        for value in selector.values("status")
    }
    assert watched == TRANSITIONAL


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    rules = load_rules()

    assert len({rule.name for rule in rules}) == len(rules) == 12
    for rule in rules:
        assert rule.labels.get("severity") in ("page", "ticket"), rule.name
        assert set(rule.annotations) == {"summary", "description", "runbook_url"}, rule.name
        # The handbook's base URL is the external label, with `make docs-serve`'s as default.
        assert rule.annotations["runbook_url"].startswith(
            "{{ with $externalLabels.handbook_url }}{{ . }}{{ else }}http://127.0.0.1:8001{{ end }}"
        ), rule.name


def test_every_alert_links_a_runbook_page_and_every_page_is_linked() -> None:
    linked = {rule.name: runbook_page(rule.annotations["runbook_url"]) for rule in load_rules()}

    missing = {
        name: page
        for name, page in linked.items()
        if page is None or not (RUNBOOKS_DIR / f"{page}.md").is_file()
    }
    assert missing == {}
    assert runbook_pages() - set(linked.values()) == set()
    assert len(set(linked.values())) == len(linked)
    assert (RUNBOOKS_DIR / "index.md").is_file()


def test_every_alert_has_a_test_that_sees_it_fire_and_one_that_sees_it_silent() -> None:
    cases = alert_cases()
    names = {rule.name for rule in load_rules()}

    assert set(cases) == names
    assert {name: counts for name, counts in cases.items() if 0 in counts} == {}


def test_the_catalogue_gives_buckets_le_and_every_series_its_target_labels() -> None:
    known = known_series()

    assert known["platform_api_request_duration_seconds_bucket"] == frozenset(
        {
            "method",
            "route",
            "le",
            "job",
            "instance",
        }
    )
    assert known["platform_api_request_duration_seconds_count"] == frozenset(
        {
            "method",
            "route",
            "job",
            "instance",
        }
    )
    assert known["up"] == frozenset({"job", "instance"})
