"""The units `make test` hands to xdist workers (tests/support/parallel.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.parallel import GROUPS, unit_of

ROOT = Path(__file__).resolve().parents[2]


def test_every_grouped_path_exists() -> None:
    # A renamed module would silently leave its group and run beside the others.
    for path in GROUPS:
        assert (ROOT / path).is_dir() if path.endswith("/") else (ROOT / path).is_file(), path


def test_the_benchmarks_and_make_dev_share_one_unit() -> None:
    units = {
        unit_of(f"tests/integration/{name}.py::test_x")
        for name in ("test_bench", "test_bench_fleet", "test_make_dev")
    }
    assert len(units) == 1


def test_every_fault_test_shares_one_unit() -> None:
    faults = sorted((ROOT / "tests" / "faults").glob("test_*.py"))
    assert faults
    units = {unit_of(f"{path.relative_to(ROOT).as_posix()}::test_x[a]") for path in faults}
    assert len(units) == 1


def test_any_other_test_stays_with_its_module() -> None:
    assert unit_of("tests/integration/test_fuzz_api.py::test_api[positive]") == (
        unit_of("tests/integration/test_fuzz_api.py::test_only_accepted")
    )
    assert unit_of("tests/integration/test_fuzz_api.py::t") != unit_of("tests/unit/test_x.py::t")
    # A folder prefix groups only what is under it.
    assert unit_of("tests/faultsy/test_x.py::t") == "tests/faultsy/test_x.py"
