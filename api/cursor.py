"""Opaque keyset cursors for the tenant list: the `PagePosition` of the last item seen; and for
the tenant directory's listing: the last tenant id seen.

A tenant-list cursor is base64url of the JSON list `[insert_xid, created_at, id]`, a directory
cursor of `["id", id]`. Anything else, however it was made, is refused as 422 before it reaches
SQL: the id must be a tenant id, the time must carry its offset, the transaction id must be an
xid8.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime

from api.errors import InvalidRequest
from infra.db.paging import MAX_XID8, PagePosition
from tenancy.models import TENANT_ID_PATTERN

_TENANT_ID = re.compile(TENANT_ID_PATTERN)


def encode(position: PagePosition) -> str:
    """The cursor that continues after `position`."""
    raw = json.dumps([position.insert_xid, position.created_at.isoformat(), position.tenant_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _invalid() -> InvalidRequest:
    return InvalidRequest(
        "invalid value for: cursor",
        errors=[{"field": "cursor", "message": "not a cursor returned by this API"}],
    )


def decode(cursor: str) -> PagePosition:
    """The keyset position in `cursor`, or InvalidRequest naming the field."""
    value = _unwrap(cursor)
    if not isinstance(value, list) or len(value) != 3:
        raise _invalid()
    insert_xid, created, tenant_id = value
    # bool is an int to Python, never a transaction id.
    if type(insert_xid) is not int or not 0 <= insert_xid <= MAX_XID8:
        raise _invalid()
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise _invalid()
    if not isinstance(created, str):
        raise _invalid()
    try:
        created_at = datetime.fromisoformat(created)
    except ValueError:
        raise _invalid() from None
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise _invalid()
    return PagePosition(insert_xid=insert_xid, created_at=created_at, tenant_id=tenant_id)


# Marks a directory cursor, so that one list's cursor is never taken by the other.
_BY_ID = "id"


def _unwrap(cursor: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _invalid() from None


def encode_id(tenant_id: str) -> str:
    """The directory cursor that continues after the tenant `tenant_id`."""
    raw = json.dumps([_BY_ID, tenant_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_id(cursor: str) -> str:
    """The tenant id in a directory cursor, or InvalidRequest naming the field."""
    value = _unwrap(cursor)
    if not isinstance(value, list) or len(value) != 2 or value[0] != _BY_ID:
        raise _invalid()
    tenant_id = value[1]
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise _invalid()
    return tenant_id
