"""`make reconcile [REPAIR=1]`: the drift report against `make dev`'s stack, or yours.

Whatever the environment leaves unset (PostgreSQL, Temporal) points at the servers `make dev`
embeds, exactly as `make dev` itself would; then `python -m reconciliation` runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from devstack.dev import DevSettings, make_plan
from infra.temporal import exit_process
from reconciliation.__main__ import main as reconcile_main
from tenancy.settings import get_settings

_FROM_PLAN = (
    "PLATFORM_DATABASE_URL",
    "PLATFORM_STORAGE_DATABASE_URL",
    "PLATFORM_STORAGE_SERVERS",
    "PLATFORM_PLACEMENT",
    "TEMPORAL_ADDRESS",
    "PLATFORM_LOG_FORMAT",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 without drift, 1 with drift (repaired or not)."""
    plan = make_plan(DevSettings(), get_settings())
    for key in _FROM_PLAN:
        if key in plan.env:
            os.environ.setdefault(key, plan.env[key])
    get_settings.cache_clear()
    return reconcile_main(argv)


if __name__ == "__main__":
    exit_process(main())
