"""Every SQL statement the service runs in tenant storage: its history table, lock and catalog.

Each service keeps its own history table in the tenant schema, `<service>_schema_history` (as
each Flyway service keeps its own `flyway_schema_history`), and its own lock, so two services
migrating one tenant neither share bookkeeping nor wait for each other. Identifiers are only
ever composed with `sql.Identifier`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

HISTORY_SUFFIX = "_schema_history"


def history_table_name(service_name: str) -> str:
    """`backend-service` keeps its history in `backend_service_schema_history`."""
    return service_name.replace("-", "_") + HISTORY_SUFFIX


class SchemaHistory:
    """One service's migration history in tenant schemas, and the lock that guards it."""

    def __init__(self, service_name: str) -> None:
        self.table_name = history_table_name(service_name)

    def lock_key(self, schema: str) -> str:
        """Text whose 64-bit hash is the advisory lock of this service's migrations of `schema`.

        Advisory locks are per database, so service and schema are all the key needs.
        """
        return f"{self.table_name}:{schema}"

    def _table(self, schema: str) -> sql.Identifier:
        return sql.Identifier(schema, self.table_name)

    def applied(self, conn: psycopg.Connection[Any], schema: str) -> set[str] | None:
        """Ids recorded in the history, or None when there is no history table (or schema).

        Outside a transaction only: the missing table's error would abort one.
        """
        query = sql.SQL("SELECT migration_id FROM {}").format(self._table(schema))
        try:
            rows = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            return None
        return {row[0] for row in rows}

    def lock(self, conn: psycopg.Connection[Any], schema: str, timeout: timedelta) -> None:
        """Take the migration lock until the transaction ends; LockNotAvailable after `timeout`.

        The timeout is SET LOCAL, so the pooled connection keeps its own setting afterwards;
        it also bounds how long a migration's DDL waits for a table lock, rather than queueing
        the tenant's own queries behind it.
        """
        milliseconds = max(1, round(timeout.total_seconds() * 1000))
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",))
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self.lock_key(schema),)
        )

    def ensure(self, conn: psycopg.Connection[Any], schema: str) -> None:
        """Create the history table if this service has never migrated `schema`."""
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " migration_id TEXT PRIMARY KEY,"
                " checksum TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ).format(self._table(schema))
        )

    def record(
        self, conn: psycopg.Connection[Any], schema: str, migration_id: str, checksum: str
    ) -> None:
        """Note `migration_id` as applied."""
        conn.execute(
            sql.SQL("INSERT INTO {} (migration_id, checksum) VALUES (%s, %s)").format(
                self._table(schema)
            ),
            (migration_id, checksum),
        )

    def forget(self, conn: psycopg.Connection[Any], schema: str, migration_id: str) -> None:
        """Note `migration_id` as rolled back."""
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(self._table(schema)),
            (migration_id,),
        )


def use_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Unqualified names in migrations mean `schema`, until the transaction ends."""
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))


def run_script(conn: psycopg.Connection[Any], script: str) -> None:
    """Run a migration file's statements as they are (no parameters, so no placeholders)."""
    # Bytes: the text comes from a file, not a literal, and psycopg sends it unchanged.
    conn.execute(script.encode())


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether `schema` exists in the connection's database."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
    ).fetchone()
    return bool(row and row[0])


def database_exists(conn: psycopg.Connection[Any], database: str) -> bool:
    """Whether `database` exists on the connection's server (pg_database is shared)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (database,)
    ).fetchone()
    return bool(row and row[0])
