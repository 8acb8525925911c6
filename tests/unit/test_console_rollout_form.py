"""The console's "Start a rollout" form read as the body of `POST /api/rollouts`."""

from __future__ import annotations

from api.console.rollout_form import (
    DEFAULT_WAVE_ROWS,
    MAX_WAVE_ROWS,
    fresh_form,
    read_form,
    request_body,
    with_another_wave,
)
from tenancy.rollouts import RolloutRequest

CONFIGURED = ["backend-service", "auth-service"]


def test_a_fresh_form_ticks_every_service_and_leaves_the_waves_to_the_api() -> None:
    form = fresh_form(CONFIGURED)
    body, problems = request_body(form)
    assert problems == []
    assert body == {"services": CONFIGURED}
    assert len(form.waves) == DEFAULT_WAVE_ROWS


def test_every_field_the_api_takes_is_sent_and_the_api_model_accepts_it() -> None:
    posted = {
        "service.auth-service": "on",
        "service.not-configured": "on",
        "selector_tenants": "acme, globex\ninitech",
        "selector_tier.BASIC": "on",
        "selector_tier.PREMIUM": "on",
        "waves": "4",
        "wave-0-name": "canary",
        "wave-0-size": "5",
        "wave-1-name": "basic",
        "wave-1-tier.BASIC": "on",
        "wave-2-name": "named",
        "wave-2-tenants": "acme globex",
        "wave-3-name": "",
        "concurrency": "16",
        "max_failure_ratio": "0.05",
        "pause_after_each_wave": "on",
    }
    body, problems = request_body(read_form(posted, CONFIGURED))
    assert problems == []
    assert body == {
        "services": ["auth-service"],
        "selector": {"tenantIds": ["acme", "globex", "initech"], "slaTier": ["BASIC", "PREMIUM"]},
        "waves": [
            {"name": "canary", "size": 5},
            {"name": "basic", "slaTier": ["BASIC"]},
            {"name": "named", "tenantIds": ["acme", "globex"]},
        ],
        "concurrency": 16,
        "maxFailureRatio": 0.05,
        "pauseAfterEachWave": True,
    }
    RolloutRequest.model_validate(body)


def test_what_a_form_cannot_say_is_named_and_nothing_is_sent() -> None:
    posted = {
        "waves": "2",
        "wave-1-size": "3",
        "concurrency": "many",
        "max_failure_ratio": "nan",
    }
    _, problems = request_body(read_form(posted, CONFIGURED))
    assert problems == [
        "services: tick at least one",
        "wave 2: give it a name",
        "concurrency: a whole number",
        "max failure ratio: a number from 0 to 1",
    ]


def test_the_form_keeps_what_was_typed_and_grows_by_one_wave_up_to_the_api_limit() -> None:
    state = read_form(
        {"waves": "1", "wave-0-name": "canary", "service.auth-service": "on"}, CONFIGURED
    )
    grown = with_another_wave(state)
    assert [w.name for w in grown.waves] == ["canary", ""]
    assert grown.services == ["auth-service"]
    huge = read_form({"waves": "999"}, CONFIGURED)
    assert len(huge.waves) == MAX_WAVE_ROWS
    assert len(with_another_wave(huge).waves) == MAX_WAVE_ROWS
