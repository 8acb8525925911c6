"""Two storage servers for the tests of moving a tenant's storage (infra.db.moves): the source
and the target, each with the deployment's roles (tests.support.storage_fleet), a StorageAdmin
connected as the platform's role, and ways to act as a service and to look at everything a move
must carry over.

A tenant's storage as the tests fill it (`fill_storage`), each service creating its own objects:

- `auth_service`: `accounts` (an identity column, a CHECK, 5 rows), granting SELECT and
  REFERENCES on it to `backend_service`; its sequence advanced past the rows;
- `backend_service`: `orders` (a serial, a foreign key to `accounts`, a CHECK, an index,
  20 rows) granting SELECT to `auth_service`, and `order_notes` (a foreign key to `orders`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from devstack.roles import Login, login_url
from infra.db.storage import StorageAdmin
from tenancy.models import StorageLocation
from tests.support.storage_fleet import platform_url

BACKEND, AUTH = "backend_service", "auth_service"
SERVICE_ROLES = (BACKEND, AUTH)
# What `fill_storage` leaves: the tables, each one's owner and its rows.
FILLED_TABLES = {"accounts": AUTH, "order_notes": BACKEND, "orders": BACKEND}
FILLED_ROWS = {"accounts": 5, "order_notes": 2, "orders": 20}


@dataclass(frozen=True)
class StorageSide:
    """One server of a move: its superuser URL (to look), the platform's URL (what the moves
    functions get) and a StorageAdmin granting storage to both services' roles."""

    superuser_url: str
    platform_url: str
    admin: StorageAdmin


@asynccontextmanager
async def storage_side(superuser_url: str) -> AsyncIterator[StorageSide]:
    """A server of `extra_pg_servers` as a move sees it."""
    url = platform_url(superuser_url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        yield StorageSide(superuser_url, url, StorageAdmin(pool, url, SERVICE_ROLES))


def superuser_on(side: StorageSide, database: str) -> str:
    """`side`'s superuser URL on `database`."""
    return make_conninfo(side.superuser_url, dbname=database)


def service_url(side: StorageSide, role: str, location: StorageLocation) -> str:
    """The tenant's database on `side` with a service role's own credentials."""
    return login_url(side.superuser_url, Login(role), location.database)


@contextmanager
def as_service(
    side: StorageSide, role: str, location: StorageLocation, *, autocommit: bool = True
) -> Iterator[psycopg.Connection[Any]]:
    """A connection as `role` to the tenant's storage on `side`, its schema on the path."""
    with psycopg.connect(service_url(side, role, location), autocommit=autocommit) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema_name)))
        if not autocommit:
            conn.commit()
        yield conn


def qualified(location: StorageLocation, table: str) -> sql.Composed:
    """`schema.table` of the tenant's storage."""
    return sql.SQL("{}").format(sql.Identifier(location.schema_name, table))


def fill_storage(side: StorageSide, location: StorageLocation) -> None:
    """Each service creates its objects and rows in the tenant's storage (see the docstring)."""
    with as_service(side, AUTH, location) as conn:
        conn.execute(
            "CREATE TABLE accounts ("
            " id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " name text NOT NULL CONSTRAINT accounts_name_present CHECK (name <> ''))"
        )
        conn.execute(
            "INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, 5) g"
        )
        conn.execute("SELECT nextval(pg_get_serial_sequence('accounts', 'id'))")
        conn.execute(
            sql.SQL("GRANT SELECT, REFERENCES ON accounts TO {}").format(sql.Identifier(BACKEND))
        )
    with as_service(side, BACKEND, location) as conn:
        conn.execute(
            "CREATE TABLE orders ("
            " id serial PRIMARY KEY,"
            " account_id int NOT NULL REFERENCES accounts (id),"
            " amount numeric(10, 2) NOT NULL CONSTRAINT orders_amount_positive CHECK (amount > 0),"
            " placed_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00')"
        )
        conn.execute("CREATE INDEX orders_by_account ON orders (account_id, placed_at)")
        conn.execute(
            "INSERT INTO orders (account_id, amount) "
            "SELECT 1 + g % 5, g * 1.25 FROM generate_series(1, 20) g"
        )
        conn.execute("SELECT nextval('orders_id_seq') FROM generate_series(1, 3)")
        conn.execute(
            "CREATE TABLE order_notes ("
            " order_id int NOT NULL REFERENCES orders (id) ON DELETE CASCADE,"
            " note text NOT NULL)"
        )
        conn.execute("INSERT INTO order_notes VALUES (1, 'first'), (2, 'second')")
        conn.execute(sql.SQL("GRANT SELECT ON orders TO {}").format(sql.Identifier(AUTH)))


def storage_snapshot(side: StorageSide, location: StorageLocation) -> dict[str, Any]:
    """Everything a move must carry over, read as the superuser: relations with their kind and
    owner, columns, indexes, constraints, table grants, sequence values and every row."""
    schema = location.schema_name
    with psycopg.connect(superuser_on(side, location.database)) as conn:
        namespace = "(SELECT oid FROM pg_namespace WHERE nspname = %s)"
        relations = conn.execute(
            "SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c "
            f"WHERE c.relnamespace = {namespace} ORDER BY c.relname",
            (schema,),
        ).fetchall()
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, "
            "is_identity, identity_generation FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
            (schema,),
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            f"FROM pg_constraint WHERE connamespace = {namespace} ORDER BY 1, 2",
            (schema,),
        ).fetchall()
        grants = conn.execute(
            "SELECT c.relname, pg_get_userbyid(a.grantor), pg_get_userbyid(a.grantee), "
            "a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            f"WHERE c.relnamespace = {namespace} ORDER BY 1, 2, 3, 4",
            (schema,),
        ).fetchall()
        sequences = {
            name: conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
            ).fetchone()
            for name, kind, _ in relations
            if kind == "S"
        }
        rows = {
            name: conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t ORDER BY 1").format(
                    sql.Identifier(schema, name)
                )
            ).fetchall()
            for name, kind, _ in relations
            if kind == "r"
        }
    return {
        "relations": relations,
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "grants": grants,
        "sequences": sequences,
        "rows": rows,
    }


def storage_grants(side: StorageSide, location: StorageLocation) -> dict[str, tuple[bool, ...]]:
    """Per service role: CONNECT on the tenant's database, USAGE and CREATE on its schema."""
    with psycopg.connect(superuser_on(side, location.database)) as conn:
        return {
            role: tuple(
                conn.execute(
                    "SELECT has_database_privilege(%s, %s, 'CONNECT'), "
                    "has_schema_privilege(%s, %s, 'USAGE'), "
                    "has_schema_privilege(%s, %s, 'CREATE')",
                    (
                        role,
                        location.database,
                        role,
                        location.schema_name,
                        role,
                        location.schema_name,
                    ),
                ).fetchone()
                or ()
            )
            for role in SERVICE_ROLES
        }
