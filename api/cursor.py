"""Opaque keyset cursors for the tenant list: `(created_at, id)` of the last item seen."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from api.errors import InvalidRequest
from tenancy.models import Tenant


def encode(tenant: Tenant) -> str:
    """The cursor that continues after `tenant`."""
    raw = json.dumps([tenant.created_at.isoformat(), tenant.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The keyset position in `cursor`, or InvalidRequest naming the field."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, tenant_id = json.loads(raw)
        if not isinstance(tenant_id, str):
            raise TypeError("cursor id must be a string")
        position = (datetime.fromisoformat(created), tenant_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(
            "invalid value for: cursor",
            errors=[{"field": "cursor", "message": "not a cursor returned by this API"}],
        ) from None
    if position[0].tzinfo is None:
        raise InvalidRequest(
            "invalid value for: cursor",
            errors=[{"field": "cursor", "message": "not a cursor returned by this API"}],
        )
    return position
