"""Keyset paging of the tenant list: a position that no late commit can fall behind.

Rows are listed in the order of `(insert_xid, created_at, id)`, where `insert_xid` is the
top-level transaction that inserted the row (`pg_current_xact_id()`, a 64-bit xid8 that never
wraps). A page hands out only rows whose transaction id is below the reading snapshot's `xmin`:
every transaction below `xmin` has ended, so no row can still appear before a position handed
out. A row whose transaction started earlier but commits later has an xid at or above that
`xmin`, so it sorts after every position handed out before it committed and is listed on a
later page. Ordering by `created_at` alone cannot promise that: `created_at` is taken at the
insert, not at the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tenancy.models import Tenant

# xid8 is an unsigned 64-bit integer.
MAX_XID8 = 2**64 - 1


@dataclass(frozen=True)
class PagePosition:
    """Where a page ended: the sort key of its last row."""

    insert_xid: int
    created_at: datetime
    tenant_id: str


@dataclass(frozen=True)
class Page:
    """Up to `limit` tenants, and the position to continue after when more are listed."""

    items: list[Tenant]
    next_after: PagePosition | None
