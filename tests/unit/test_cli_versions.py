"""`services versions --require`: the deploy gate over the API's version spread."""

from __future__ import annotations

from typing import Any

import pytest

from cli.versions import Requirement, below


def spread(versions: dict[str, int], tenants: int | None = None, failed: int = 0) -> dict[str, Any]:
    total = sum(versions.values()) if tenants is None else tenants
    return {"service": "backend-service", "versions": versions, "failed": failed, "tenants": total}


def test_every_tenant_at_or_above_the_version_meets_it() -> None:
    requirement = Requirement.of(spread({"b_0002": 3, "b_0003": 1}), "b_0002")
    assert requirement.met
    assert requirement.tenants_below == 0
    assert requirement.summary() == "every tenant (4) is at b_0002 or later"


def test_tenants_below_are_counted_by_version() -> None:
    requirement = Requirement.of(spread({"b_0001": 2, "b_0002": 1, "b_0003": 4}), "b_0003")
    assert not requirement.met
    assert requirement.below == {"b_0001": 2, "b_0002": 1}
    assert requirement.tenants_below == 3
    assert requirement.summary() == "3 of 7 tenants below b_0003 (2 at b_0001, 1 at b_0002)"
    assert requirement.document() == {
        "version": "b_0003",
        "met": False,
        "tenantsBelow": 3,
        "below": {"b_0001": 2, "b_0002": 1},
        "withoutVersion": 0,
        "failed": 0,
    }


def test_a_record_without_a_version_or_a_failed_one_fails_the_gate() -> None:
    unversioned = Requirement.of(spread({"b_0003": 2}, tenants=3), "b_0003")
    assert not unversioned.met
    assert unversioned.summary() == "1 without a recorded version"
    failed = Requirement.of(spread({"b_0003": 2}, failed=1), "b_0003")
    assert not failed.met
    assert failed.summary() == "1 with a FAILED migration"


def test_no_tenant_at_all_meets_any_version() -> None:
    assert Requirement.of(spread({}), "b_0009").met


@pytest.mark.parametrize(
    ("version", "required", "is_below"),
    [
        ("backend_0002_project_archiving", "backend_0003_project_labels", True),
        ("backend_0003_project_labels", "backend_0003_project_labels", False),
        ("backend_0010_x", "backend_0009_y", False),
        # By code point, as the API's minVersion: versions must sort as strings.
        ("v10", "v9", True),
        ("B", "a", True),
    ],
)
def test_versions_compare_as_strings_by_code_point(
    version: str, required: str, is_below: bool
) -> None:
    assert below(version, required) is is_below
    # The API's minVersion is Python's min() over the same strings (infra/db/services.py).
    assert (min(version, required) == version and version != required) is is_below
