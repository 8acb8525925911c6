"""Conditional GETs (api.etags) and the directory's cursor: pure rules."""

from __future__ import annotations

import pytest

from api import cursor as cursors
from api.errors import InvalidRequest
from api.etags import etag_of, none_match
from tests.support.api_client import tenant_cursor


def test_a_strong_tag_changes_with_any_byte() -> None:
    tag = etag_of(b'{"status":"ACTIVE"}')
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert etag_of(b'{"status":"ACTIVE"}') == tag
    assert etag_of(b'{"status":"ACTIVF"}') != tag


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ('"abc"', True),
        ('"abd"', False),
        ("*", True),
        (" * ", True),
        ('"x", "abc"', True),
        ('"x","y"', False),
        ('W/"abc"', True),
        ('"a,b", W/"abc"', True),
        ('"a,b"', False),
        ("abc", False),
        ("", False),
    ],
)
def test_if_none_match_takes_a_list_star_and_weak_tags(header: str | None, matches: bool) -> None:
    assert none_match(header, '"abc"') is matches


def test_a_directory_cursor_round_trips_and_refuses_anything_else() -> None:
    assert cursors.decode_id(cursors.encode_id("acme_corp")) == "acme_corp"
    tenant_list_cursor = tenant_cursor(1, "2026-01-01T00:00:00+00:00", "acme_corp")
    for bad in ("", "not-base64!", tenant_list_cursor, cursors.encode_id("A")):
        with pytest.raises(InvalidRequest):
            cursors.decode_id(bad)
