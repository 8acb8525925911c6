"""Rows holding text no request may carry any more: written straight into PostgreSQL, as rows
stored before the API refused such text, for tests of how every display shows them."""

from __future__ import annotations

import psycopg

# A C1 control (NEL), the C1 CSI, a line separator and a right-to-left override.
HOSTILE_CHARACTERS = ("\u0085", "\u009b", "\u2028", "\u202e")
# What an escaping display shows for each.
ESCAPES = ("\\x85", "\\x9b", "\\u2028", "\\u202e")


def hostile(label: str) -> str:
    """`label` with every hostile character in it."""
    return label + "".join(f"{c}{i}" for i, c in enumerate(HOSTILE_CHARACTERS))


def raw_unprintable(text: str, allowed: str = "\n") -> list[str]:
    """The characters of `text` that are not printable (but those `allowed`), as U+XXXX."""
    return sorted({f"U+{ord(c):04X}" for c in text if not c.isprintable() and c not in allowed})


def insert_hostile_tenant(database_url: str, tenant_id: str) -> None:
    """A tenant in DELETION_SCHEDULED whose name, status reason, migration error, deletion
    reason and audit event all carry the hostile characters."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO tenants (id, name, storage_mode, sla_tier, status, status_reason,
                                 workflow_id, workflow_run_id, created_by,
                                 deletion_requested_at, deletion_requested_by, deletion_reason,
                                 deletion_purge_at, deletion_previous_status)
            VALUES (%s, %s, 'SCHEMA', 'BASIC', 'DELETION_SCHEDULED', %s, %s, 'run-1', 'ops',
                    now(), 'ops', %s, now() + interval '1 day', 'ACTIVE')
            """,
            (
                tenant_id,
                hostile("Evil"),
                hostile("reason"),
                f"tenant-provision-{tenant_id}",
                hostile("deleted"),
            ),
        )
        conn.execute(
            """
            INSERT INTO tenant_migrations (tenant_id, service, status, attempts, last_error)
            VALUES (%s, 'backend-service', 'FAILED', 1, %s)
            """,
            (tenant_id, hostile("error")),
        )
        conn.execute(
            """
            INSERT INTO tenant_events (tenant_id, actor, action, old_status, new_status, reason)
            VALUES (%s, 'ops', 'STATUS_CHANGED', 'MIGRATING', 'ACTIVE', %s)
            """,
            (tenant_id, hostile("audit")),
        )
