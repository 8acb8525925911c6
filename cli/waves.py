"""The `--wave` syntax of `rollouts start`, parsed into the API's WaveSpec.

    NAME[:KEY=VALUE[,KEY=VALUE...]]     KEY one of: size, tier, tenants

`size` is a whole number (the wave takes the first `size` matching tenants); `tier` and
`tenants` take one value or several joined with `+`. Each maps onto one field of the
WaveSpec of `POST /api/rollouts`:

    canary:size=1                       {"name": "canary", "size": 1}
    basic:tier=BASIC+STANDARD,size=50   {"name": "basic", "size": 50,
                                         "slaTier": ["BASIC", "STANDARD"]}
    pilots:tenants=acme+globex          {"name": "pilots", "tenantIds": ["acme", "globex"]}
    rest                                {"name": "rest"}
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tenancy.rollouts import WaveSpec

WAVE_SYNTAX = "NAME[:size=N,tier=T1+T2,tenants=ID1+ID2]"
# The syntax's keys and the WaveSpec field each one sets.
_FIELDS = {"size": "size", "tier": "sla_tier", "tenants": "tenant_ids"}
_LISTS = {"tier", "tenants"}


class WaveSyntaxError(ValueError):
    """A `--wave` value that does not follow the syntax; the message says what is wrong."""


def parse_wave(text: str) -> dict[str, Any]:
    """One `--wave` value as the JSON wave of `POST /api/rollouts` (camelCase, unset fields
    left out), validated by the API's own WaveSpec."""
    name, _, options = text.partition(":")
    values: dict[str, Any] = {"name": name}
    if options:
        for item in options.split(","):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or not value:
                raise WaveSyntaxError(f"{item!r} is not KEY=VALUE (in {text!r})")
            if key not in _FIELDS:
                raise WaveSyntaxError(
                    f"unknown key {key!r} in {text!r}: use {', '.join(sorted(_FIELDS))}"
                )
            if _FIELDS[key] in values:
                raise WaveSyntaxError(f"{key} given twice in {text!r}")
            values[_FIELDS[key]] = _list(key, value) if key in _LISTS else value.strip()
    try:
        # Lax: the syntax is text, so `size=50` is read as the number it spells.
        wave = WaveSpec.model_validate(values, strict=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_key_of(err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise WaveSyntaxError(f"invalid wave {text!r}: {problems}") from None
    return wave.model_dump(mode="json", by_alias=True, exclude_none=True)


def _list(key: str, value: str) -> list[str]:
    parts = [part.strip() for part in value.split("+")]
    # Tiers are enum values; accept them in any case, like the --tier options do.
    return [part.upper() for part in parts] if key == "tier" else parts


def _key_of(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "wave"
    return next((key for key, name in _FIELDS.items() if name == field), field)
