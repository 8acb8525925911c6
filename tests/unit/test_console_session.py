"""The console's session rules that need no server: CSRF tokens, where sign-in may lead, the
token a request presents, and which browser the browser tests drive."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.requests import Request

from api.console.session import (
    SESSION_COOKIE,
    csrf_matches,
    csrf_token_for,
    presented_token,
    token_digest,
    token_expiry,
    token_lifetime,
)
from api.console.web import _same_origin, safe_next
from devstack.browser import find_chromium
from devstack.tokens import mint
from infra.security.keys import generate_private_key


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "server": ("console.example", 443 if scheme == "https" else 80),
            "path": "/console/tenants",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
    )


def test_the_csrf_token_is_bound_to_the_session_token() -> None:
    first, second = csrf_token_for("token-a"), csrf_token_for("token-b")
    assert first == csrf_token_for("token-a")
    assert first != second
    assert csrf_matches("token-a", first)
    assert not csrf_matches("token-a", second)
    assert not csrf_matches("token-a", None)
    assert not csrf_matches("token-a", "")


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/console/tenants/acme", "/console/tenants/acme"),
        ("/console?status=ACTIVE", "/console?status=ACTIVE"),
        ("/console", "/console"),
        ("https://evil.example/console", "/console"),
        ("//evil.example/console", "/console"),
        ("/consoles", "/console"),
        ("/console/\\evil", "/console"),
        ("/console/\nSet-Cookie: x", "/console"),
        ("/api/tenants", "/console"),
        (None, "/console"),
        ("", "/console"),
    ],
)
def test_sign_in_returns_only_to_a_console_page(asked: str | None, kept: str) -> None:
    assert safe_next(asked) == kept


def test_the_authorization_header_of_a_proxy_wins_over_the_cookie() -> None:
    both = _request({"Authorization": "Bearer from-proxy", "Cookie": f"{SESSION_COOKIE}=cookie"})
    assert presented_token(both) == ("from-proxy", True)
    cookie_only = _request({"Cookie": f"{SESSION_COOKIE}=cookie"})
    assert presented_token(cookie_only) == ("cookie", False)
    assert presented_token(_request({"Authorization": "Basic abc"})) is None
    assert presented_token(_request({})) is None


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({}, True),
        ({"Origin": "http://console.example"}, True),
        ({"Origin": "https://console.example"}, True),
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "http://console.example.evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
    ],
)
def test_forms_posted_from_another_origin_are_recognised(
    headers: dict[str, str], same: bool
) -> None:
    assert _same_origin(_request(headers)) is same


def test_the_session_cookie_lives_no_longer_than_the_token(tmp_path: Path) -> None:
    key = tmp_path / "idp.pem"
    generate_private_key(key)
    token = mint(key, subject="a", scopes=[], audience="x", ttl=timedelta(minutes=10))
    assert 590 <= token_lifetime(token) <= 600
    later = datetime.now(UTC) + timedelta(hours=1)
    assert token_lifetime(token, now=later) == 0


def test_the_browser_is_the_named_one_or_the_first_on_path(tmp_path: Path) -> None:
    named = tmp_path / "my-chromium"
    named.touch()
    assert find_chromium({"PLATFORM_CHROMIUM": str(named)}) == str(named)
    assert find_chromium({"PLATFORM_CHROMIUM": str(tmp_path / "missing")}) is None


def test_a_sign_out_is_remembered_by_the_tokens_digest_until_it_expires(tmp_path: Path) -> None:
    key = tmp_path / "idp.pem"
    generate_private_key(key)
    token = mint(key, subject="a", scopes=[], audience="x", ttl=timedelta(minutes=10))
    expected = datetime.now(UTC) + timedelta(minutes=10)
    assert abs(token_expiry(token) - expected) < timedelta(seconds=5)
    assert token_digest(token) == hashlib.sha256(token.encode()).digest()
    assert token_digest(token) != token_digest(token + "x")
