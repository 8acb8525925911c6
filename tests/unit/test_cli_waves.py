"""The `--wave` syntax of `platformctl rollouts start`, parsed into the API's wave JSON."""

from __future__ import annotations

import pytest

from cli.waves import WaveSyntaxError, parse_wave


@pytest.mark.parametrize(
    ("text", "wave"),
    [
        ("rest", {"name": "rest"}),
        ("canary:size=1", {"name": "canary", "size": 1}),
        (
            "basic:tier=BASIC+standard,size=50",
            {"name": "basic", "size": 50, "slaTier": ["BASIC", "STANDARD"]},
        ),
        ("pilots:tenants=acme+globex", {"name": "pilots", "tenantIds": ["acme", "globex"]}),
        ("w.1:TIER=premium", {"name": "w.1", "slaTier": ["PREMIUM"]}),
    ],
)
def test_a_wave_maps_onto_the_wavespec_fields(text: str, wave: dict[str, object]) -> None:
    assert parse_wave(text) == wave


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("canary:limit=5", "unknown key 'limit'"),
        ("canary:size=1,size=2", "size given twice"),
        ("canary:size", "is not KEY=VALUE"),
        ("canary:size=", "is not KEY=VALUE"),
        ("canary:size=many", "size:"),
        ("canary:size=0", "size:"),
        ("canary:tier=GOLD", "tier:"),
        ("canary:tenants=Acme", "tenants:"),
        ("", "name:"),
        ("bad name", "name:"),
    ],
)
def test_a_wave_off_the_syntax_is_refused_naming_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(WaveSyntaxError, match=f"(?s){says}") as raised:
        parse_wave(text)
    assert repr(text) in str(raised.value)
