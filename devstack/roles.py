"""A deployment's PostgreSQL roles and databases, created idempotently with the superuser.

`make dev` (embedded PostgreSQL), the compose file's one-shot `db-roles` service and the test
suite all call `apply_layout`, so all three run the privilege model docs/security.md
describes:

- the platform's role (LOGIN, CREATEDB, NOSUPERUSER, NOCREATEROLE) owns the metadata database,
  its tables, and the storage database where tenant schemas are created;
- each downstream service's role (LOGIN, nothing else) owns a database of its own for its state,
  and may connect to the storage database;
- no one else may connect to the metadata database (PUBLIC's CONNECT is revoked);
- the platform's role is a member of two predefined roles (PostgreSQL 14+), because the tables
  in tenant storage belong to the services' roles: `pg_read_all_data` (reads every table and
  sequence, writes nothing) so its `pg_dump` can back a tenant up before deletion, and
  `pg_signal_backend` so `DROP DATABASE ... WITH (FORCE)` may end the services' sessions on a
  tenant database. It still cannot write or alter the services' tables, nor connect to their
  own databases;
- the platform's role is also a member of each service's role `WITH INHERIT FALSE, SET TRUE`
  (PostgreSQL 16+): it holds none of their privileges, but may `SET ROLE` to one, which a move
  between servers needs to restore each service's objects as their owner (infra.db.moves).

Tenant schemas and databases are granted to the service roles by the platform itself, when it
creates them (infra.db.storage).

    python -m devstack.roles --superuser-url postgresql://postgres:pw@db/postgres \\
        --platform platform:pw --metadata-db platform --storage-db tenants \\
        --service backend_service:pw --service auth_service:pw
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql

from tenancy.settings import DB_ROLE_PATTERN

_log = logging.getLogger("devstack.roles")
_ROLE = re.compile(DB_ROLE_PATTERN)


@dataclass(frozen=True)
class Login:
    """A LOGIN role and its password."""

    role: str
    password: str = ""

    def __post_init__(self) -> None:
        if not _ROLE.fullmatch(self.role):
            raise ValueError(f"role {self.role!r} does not match {DB_ROLE_PATTERN}")


@dataclass(frozen=True)
class Layout:
    """Who owns what. Without `platform` the platform connects as the superuser (its databases
    stay the superuser's); each service's own database has the service role's name."""

    metadata_database: str
    storage_database: str
    platform: Login | None = None
    services: tuple[Login, ...] = ()


def service_role(service_name: str) -> str:
    """The conventional role of a downstream service: `backend-service` -> `backend_service`."""
    return service_name.replace("-", "_")


def login_url(server_url: str, login: Login, database: str) -> str:
    """`server_url`'s host and port with `login`'s credentials and `database`."""
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    userinfo = quote(login.role, safe="")
    if login.password:
        userinfo += ":" + quote(login.password, safe="")
    return urlunsplit((parts.scheme, f"{userinfo}@{host}{port}", f"/{database}", "", ""))


def _on_database(server_url: str, database: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


def _ensure_login(conn: psycopg.Connection[Any], login: Login, *, createdb: bool) -> None:
    role = sql.Identifier(login.role)
    with contextlib.suppress(errors.DuplicateObject, errors.UniqueViolation):
        conn.execute(sql.SQL("CREATE ROLE {}").format(role))
    # Also on an existing role: its attributes and password become what the layout says.
    conn.execute(
        sql.SQL(
            "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS {} "
            "PASSWORD {}"
        ).format(
            role,
            sql.SQL("CREATEDB" if createdb else "NOCREATEDB"),
            sql.Literal(login.password or None),
        )
    )


def _ensure_database(conn: psycopg.Connection[Any], name: str, owner: str) -> None:
    database = sql.Identifier(name)
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists is None:
        with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(database, sql.Identifier(owner))
            )
            _log.info("created database %s", name)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, sql.Identifier(owner)))


def _grantees(logins: Sequence[Login]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(login.role) for login in logins)


def _adopt_metadata_tables(conn: psycopg.Connection[Any], owner: str) -> None:
    """Tables an earlier superuser-run deployment created become the platform role's, so its
    migrations and queries keep working (owned sequences and indexes follow their table)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
        "AND pg_get_userbyid(c.relowner) <> %s",
        (owner,),
    ).fetchall()
    for (table,) in rows:
        conn.execute(
            sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(
                sql.Identifier(table), sql.Identifier(owner)
            )
        )


def apply_layout(superuser_url: str, layout: Layout) -> None:
    """Create or correct the layout's roles, databases and database privileges."""
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        superuser = conn.info.user
        logins = [*([layout.platform] if layout.platform else []), *layout.services]
        if superuser in {login.role for login in logins}:
            raise ValueError(f"{superuser} is the superuser this runs as, not a role to restrict")
        if layout.platform is not None:
            _ensure_login(conn, layout.platform, createdb=True)
            # Granting a membership twice is a notice, not an error.
            conn.execute(
                sql.SQL("GRANT pg_read_all_data, pg_signal_backend TO {}").format(
                    sql.Identifier(layout.platform.role)
                )
            )
        for service in layout.services:
            _ensure_login(conn, service, createdb=False)
        if layout.platform is not None and layout.services:
            # Also on an existing membership: its options become these.
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH INHERIT FALSE, SET TRUE").format(
                    _grantees(layout.services), sql.Identifier(layout.platform.role)
                )
            )
        owner = layout.platform.role if layout.platform else superuser
        for name in dict.fromkeys([layout.metadata_database, layout.storage_database]):
            _ensure_database(conn, name, owner)
        for service in layout.services:
            _ensure_database(conn, service.role, service.role)
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(service.role)
                )
            )
        metadata = sql.Identifier(layout.metadata_database)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(metadata))
        if layout.services:
            if layout.metadata_database != layout.storage_database:
                conn.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                        metadata, _grantees(layout.services)
                    )
                )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(layout.storage_database), _grantees(layout.services)
                )
            )
    with psycopg.connect(
        _on_database(superuser_url, layout.metadata_database), autocommit=True
    ) as conn:
        # Before PostgreSQL 15 every role may create in `public`; only the owner should.
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner))
        )
        if layout.platform is not None:
            _adopt_metadata_tables(conn, layout.platform.role)
    if layout.storage_database != layout.metadata_database:
        with psycopg.connect(
            _on_database(superuser_url, layout.storage_database), autocommit=True
        ) as conn:
            # Service roles create in their tenants' schemas, not in the shared `public`.
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def _login(value: str) -> Login:
    role, _, password = value.partition(":")
    try:
        return Login(role, password)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m devstack.roles` (the compose file's `db-roles`)."""
    parser = argparse.ArgumentParser(prog="python -m devstack.roles", description=__doc__)
    parser.add_argument("--superuser-url", required=True)
    parser.add_argument("--metadata-db", required=True)
    parser.add_argument("--storage-db", required=True)
    parser.add_argument("--platform", type=_login, metavar="ROLE:PASSWORD")
    parser.add_argument(
        "--service", type=_login, action="append", default=[], metavar="ROLE:PASSWORD"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devstack.roles ...`: apply one layout, then exit."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s devstack.roles: %(message)s")
    layout = Layout(args.metadata_db, args.storage_db, args.platform, tuple(args.service))
    apply_layout(args.superuser_url, layout)
    _log.info(
        "roles ready: platform %s, services %s",
        layout.platform.role if layout.platform else "(superuser)",
        ", ".join(s.role for s in layout.services) or "(none)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
