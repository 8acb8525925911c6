"""Every SQL statement the service runs in tenant storage: its history table, lock and catalog,
and the teardown of what it owns there.

Each service keeps its own history table in the tenant schema, `<service>_schema_history` (as
each Flyway service keeps its own `flyway_schema_history`), and its own lock, so two services
migrating one tenant neither share bookkeeping nor wait for each other. Identifiers are only
ever composed with `sql.Identifier`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
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


class ObjectKind(Enum):
    """What a teardown drops, in the order it drops them: dependents before what they use.

    Each value is the DROP statement's own keyword, never text read from the catalog.
    """

    VIEW = "VIEW"
    MATERIALIZED_VIEW = "MATERIALIZED VIEW"
    FOREIGN_TABLE = "FOREIGN TABLE"
    TABLE = "TABLE"
    SEQUENCE = "SEQUENCE"
    ROUTINE = "ROUTINE"
    DOMAIN = "DOMAIN"
    TYPE = "TYPE"


@dataclass(frozen=True, slots=True)
class OwnedObject:
    """An object the connection's role owns in a schema; a routine with its argument types
    as (schema, type name) pairs, which DROP needs to tell overloads apart."""

    kind: ObjectKind
    name: str
    arguments: tuple[tuple[str, str], ...] = ()


# Only what the role itself owns in the one schema (never DROP OWNED BY, which reaches the
# role's objects in every schema of the database: every other tenant's, in SCHEMA mode).
# Left out because they go with what they belong to: indexes, a table's row type, sequences
# owned by a column (serial, identity: deptype a or i), partitions (dropped with their parent).
_OWNED = """
WITH me AS (SELECT oid FROM pg_roles WHERE rolname = current_user),
     ns AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED_VIEW'
           WHEN 'f' THEN 'FOREIGN_TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
       c.relname, NULL::text[]
FROM pg_class c
WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relowner = (SELECT oid FROM me)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT 'ROUTINE', p.proname,
       ARRAY(SELECT ARRAY[tn.nspname::text, t.typname::text]
             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(type, position)
             JOIN pg_type t ON t.oid = a.type JOIN pg_namespace tn ON tn.oid = t.typnamespace
             ORDER BY a.position)
FROM pg_proc p
WHERE p.pronamespace = (SELECT oid FROM ns) AND p.proowner = (SELECT oid FROM me)
  AND p.prokind IN ('f', 'p', 'w')
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typname, NULL::text[]
FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typowner = (SELECT oid FROM me)
  AND t.typtype IN ('c', 'd', 'e', 'r') AND (t.typtype <> 'c' OR c.relkind = 'c')
"""

# Anything at all the role owns in the schema, in every catalog of schema-bound objects that
# have an owner: what "nothing of ours is left" is checked against.
_ANYTHING_OWNED = """
WITH me AS (SELECT oid FROM pg_roles WHERE rolname = current_user),
     ns AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
SELECT relname::text FROM pg_class
 WHERE relnamespace = (SELECT oid FROM ns) AND relowner = (SELECT oid FROM me)
UNION ALL SELECT typname::text FROM pg_type
 WHERE typnamespace = (SELECT oid FROM ns) AND typowner = (SELECT oid FROM me)
UNION ALL SELECT proname::text FROM pg_proc
 WHERE pronamespace = (SELECT oid FROM ns) AND proowner = (SELECT oid FROM me)
UNION ALL SELECT collname::text FROM pg_collation
 WHERE collnamespace = (SELECT oid FROM ns) AND collowner = (SELECT oid FROM me)
UNION ALL SELECT conname::text FROM pg_conversion
 WHERE connamespace = (SELECT oid FROM ns) AND conowner = (SELECT oid FROM me)
UNION ALL SELECT oprname::text FROM pg_operator
 WHERE oprnamespace = (SELECT oid FROM ns) AND oprowner = (SELECT oid FROM me)
UNION ALL SELECT opfname::text FROM pg_opfamily
 WHERE opfnamespace = (SELECT oid FROM ns) AND opfowner = (SELECT oid FROM me)
UNION ALL SELECT opcname::text FROM pg_opclass
 WHERE opcnamespace = (SELECT oid FROM ns) AND opcowner = (SELECT oid FROM me)
UNION ALL SELECT cfgname::text FROM pg_ts_config
 WHERE cfgnamespace = (SELECT oid FROM ns) AND cfgowner = (SELECT oid FROM me)
UNION ALL SELECT dictname::text FROM pg_ts_dict
 WHERE dictnamespace = (SELECT oid FROM ns) AND dictowner = (SELECT oid FROM me)
UNION ALL SELECT stxname::text FROM pg_statistic_ext
 WHERE stxnamespace = (SELECT oid FROM ns) AND stxowner = (SELECT oid FROM me)
ORDER BY 1
"""


def owned_objects(conn: psycopg.Connection[Any], schema: str) -> list[OwnedObject]:
    """What a teardown of `schema` drops: the top-level objects the role owns there."""
    rows = conn.execute(_OWNED, {"schema": schema}).fetchall()
    return [
        OwnedObject(
            ObjectKind[kind],
            name,
            tuple((type_schema, type_name) for type_schema, type_name in arguments or ()),
        )
        for kind, name, arguments in rows
    ]


def anything_owned(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Names of every object the role owns in `schema`, whatever its kind, sorted."""
    return [row[0] for row in conn.execute(_ANYTHING_OWNED, {"schema": schema}).fetchall()]


def drop_objects(
    conn: psycopg.Connection[Any], schema: str, objects: Iterable[OwnedObject]
) -> None:
    """Drop `objects` of `schema`, kind by kind in ObjectKind's order, without CASCADE.

    RESTRICT (the default) is the point: an object another role owns that depends on one of
    ours makes the statement fail with DependentObjectsStillExist instead of vanishing too.
    Objects of one kind go in one statement, so dependencies among them need no ordering.
    """
    by_kind: dict[ObjectKind, list[sql.Composable]] = {}
    for item in objects:
        name: sql.Composable = sql.Identifier(schema, item.name)
        if item.kind is ObjectKind.ROUTINE:
            name = sql.SQL("{}({})").format(
                name, sql.SQL(", ").join(sql.Identifier(*argument) for argument in item.arguments)
            )
        by_kind.setdefault(item.kind, []).append(name)
    for kind in ObjectKind:
        names = by_kind.get(kind)
        if names:
            conn.execute(
                sql.SQL("DROP {} {}").format(sql.SQL(kind.value), sql.SQL(", ").join(names))
            )
