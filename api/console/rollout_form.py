"""The "Start a rollout" form: what its fields say, as the body of `POST /api/rollouts`.

Pure: a posted form (field name -> value) in, the form's state (to render it again with the
operator's values) and the request body out. Only what a form cannot say is checked here (a
number that is not one, a wave row without a name, no service ticked); everything else (ranges,
patterns, unknown services) is the API's to refuse, and its problem line is shown as is.

Field names: `service.<name>` per ticked service; `selector_tenants` and `selector_tier.<TIER>`
for the selector; per wave row i: `wave-<i>-name`, `wave-<i>-size`, `wave-<i>-tier.<TIER>`,
`wave-<i>-tenants`; `waves` (how many rows the form shows); `concurrency`,
`max_failure_ratio`, `pause_after_each_wave`. A ticked checkbox is any non-empty value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenancy.models import SlaTier

# Rows a fresh form shows; all empty means the API's default (one wave named `all`).
DEFAULT_WAVE_ROWS = 3
# The API takes at most 20 waves.
MAX_WAVE_ROWS = 20
TIERS = tuple(tier.value for tier in SlaTier)
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass
class WaveRow:
    """One row of the waves table, as typed."""

    name: str = ""
    size: str = ""
    tiers: list[str] = field(default_factory=list)
    tenants: str = ""

    @property
    def empty(self) -> bool:
        """Nothing typed or ticked in the row."""
        return not (self.name or self.size or self.tiers or self.tenants)


@dataclass
class RolloutForm:
    """The form's values, to render it (again)."""

    services: list[str]
    selector_tenants: str = ""
    selector_tiers: list[str] = field(default_factory=list)
    waves: list[WaveRow] = field(default_factory=list)
    concurrency: str = ""
    max_failure_ratio: str = ""
    pause_after_each_wave: bool = False


def fresh_form(configured: Sequence[str]) -> RolloutForm:
    """The form as first shown: every configured service ticked, empty wave rows."""
    return RolloutForm(
        services=list(configured), waves=[WaveRow() for _ in range(DEFAULT_WAVE_ROWS)]
    )


def _ticked(form: Mapping[str, str], prefix: str, choices: Sequence[str]) -> list[str]:
    return [choice for choice in choices if form.get(f"{prefix}{choice}")]


def _row_count(form: Mapping[str, str]) -> int:
    raw = form.get("waves", "")
    count = int(raw) if raw.isdigit() else DEFAULT_WAVE_ROWS
    return max(1, min(count, MAX_WAVE_ROWS))


def read_form(form: Mapping[str, str], configured: Sequence[str]) -> RolloutForm:
    """The form's state from a posted form."""
    rows = [
        WaveRow(
            name=form.get(f"wave-{i}-name", "").strip(),
            size=form.get(f"wave-{i}-size", "").strip(),
            tiers=_ticked(form, f"wave-{i}-tier.", TIERS),
            tenants=form.get(f"wave-{i}-tenants", "").strip(),
        )
        for i in range(_row_count(form))
    ]
    return RolloutForm(
        services=_ticked(form, "service.", configured),
        selector_tenants=form.get("selector_tenants", "").strip(),
        selector_tiers=_ticked(form, "selector_tier.", TIERS),
        waves=rows,
        concurrency=form.get("concurrency", "").strip(),
        max_failure_ratio=form.get("max_failure_ratio", "").strip(),
        pause_after_each_wave=bool(form.get("pause_after_each_wave")),
    )


def with_another_wave(state: RolloutForm) -> RolloutForm:
    """The same form with one more empty wave row (up to the API's 20)."""
    if len(state.waves) < MAX_WAVE_ROWS:
        state.waves.append(WaveRow())
    return state


def _ids(text: str) -> list[str]:
    return [item for item in _SEPARATORS.split(text) if item]


def _whole(text: str, label: str, problems: list[str]) -> int | None:
    if not text:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", text):
        problems.append(f"{label}: a whole number")
        return None
    return int(text)


def _wave(row: WaveRow, position: int, problems: list[str]) -> dict[str, Any]:
    wave: dict[str, Any] = {"name": row.name}
    if not row.name:
        problems.append(f"wave {position}: give it a name")
    size = _whole(row.size, f"wave {position} size", problems)
    if size is not None:
        wave["size"] = size
    if row.tiers:
        wave["slaTier"] = row.tiers
    if row.tenants:
        wave["tenantIds"] = _ids(row.tenants)
    return wave


def request_body(state: RolloutForm) -> tuple[dict[str, Any], list[str]]:
    """The body of `POST /api/rollouts` the form says, and what the form itself gets wrong
    (one short line each; the body is not to be sent while there are any)."""
    problems: list[str] = []
    if not state.services:
        problems.append("services: tick at least one")
    body: dict[str, Any] = {"services": state.services}
    selector: dict[str, Any] = {}
    if state.selector_tenants:
        selector["tenantIds"] = _ids(state.selector_tenants)
    if state.selector_tiers:
        selector["slaTier"] = state.selector_tiers
    if selector:
        body["selector"] = selector
    waves = [
        _wave(row, position, problems)
        for position, row in enumerate(state.waves, start=1)
        if not row.empty
    ]
    if waves:
        body["waves"] = waves
    concurrency = _whole(state.concurrency, "concurrency", problems)
    if concurrency is not None:
        body["concurrency"] = concurrency
    if state.max_failure_ratio:
        try:
            ratio = float(state.max_failure_ratio)
        except ValueError:
            ratio = math.nan
        if math.isfinite(ratio):
            body["maxFailureRatio"] = ratio
        else:
            problems.append("max failure ratio: a number from 0 to 1")
    if state.pause_after_each_wave:
        body["pauseAfterEachWave"] = True
    return body, problems
