"""Conditional GETs (api.etags) and the directory's cursor: pure rules."""

from __future__ import annotations

import pytest

from api import cursor as cursors
from api.errors import InvalidRequest
from api.etags import none_match, shape_of
from infra.db.repository import TenantSnapshot
from tenancy.models import CamelModel
from tests.support.api_client import tenant_cursor


def test_a_tenant_s_version_changes_with_any_value_read_and_only_then() -> None:
    rows = [("acme", "ACTIVE", 3, None), ("acme", "ACTIVE", 3, "backend")]
    version = TenantSnapshot(rows).version
    assert TenantSnapshot([tuple(r) for r in rows]).version == version
    for changed in (
        [("acme", "ACTIVF", 3, None), rows[1]],
        [rows[0], ("acme", "ACTIVE", 3, "backenc")],
        [rows[0], ("acme", "ACTIVE", 3, "")],
        [rows[0], ("acme", "ACTIVE", "3", "backend")],
        rows[:1],
    ):
        assert TenantSnapshot(changed).version != version


def test_a_model_s_shape_changes_with_its_fields() -> None:
    class Before(CamelModel):
        tenant_id: str

    class After(CamelModel):
        tenant_id: str
        epoch: int

    assert shape_of(Before) == shape_of(Before)
    assert shape_of(After) != shape_of(Before)


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
