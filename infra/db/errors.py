"""Whether a database error is worth another try: a pure rule over SQLSTATE codes.

TRANSIENT errors say the server could not do the work right now (it is down, restarting,
out of connections or resources, or the statement lost a lock or a race); the same statement
can succeed later. PERMANENT errors say the server understood the statement and refused it
(privileges, names, syntax, data): the same statement fails the same way every time.

A SQLSTATE that no rule names is PERMANENT. The server did answer, and the transient
conditions are few and listed below; retrying an unknown answer forever would hide it,
while a definite failure shows its reason to an operator, who has a way out (the retry
endpoints). An error without a SQLSTATE comes from the client side: a connection that could
not be made or was lost, or a pool without a free connection, is TRANSIENT; a statement the
driver refused to send (bad data, wrong parameters) is PERMANENT.
"""

from __future__ import annotations

from enum import StrEnum

import psycopg


class ErrorKind(StrEnum):
    """What a retry can do about an error."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


# Whole SQLSTATE classes: connection exception, insufficient resources, system (I/O) error.
_TRANSIENT_CLASSES = frozenset({"08", "53", "58"})
_TRANSIENT_CODES = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, recovering)
        "57P05",  # idle_session_timeout
        "57014",  # query_canceled (statement timeout)
        "55P03",  # lock_not_available (lock timeout)
        "55006",  # object_in_use (e.g. the template database is busy)
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "40003",  # statement_completion_unknown
    }
)
# Client-side errors without a SQLSTATE that a statement the driver refused never raises.
_TRANSIENT_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection refused or lost; psycopg_pool.PoolTimeout
    psycopg.InterfaceError,  # the connection is closed
    OSError,
    TimeoutError,
)


def sqlstate(error: BaseException) -> str | None:
    """The five-character SQLSTATE the server sent with `error`, if any."""
    code = getattr(error, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def classify_sqlstate(code: str) -> ErrorKind:
    """TRANSIENT for the codes and classes listed above, PERMANENT for any other."""
    if code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def classify(error: BaseException) -> ErrorKind:
    """What a retry can do about `error`, raised by psycopg, its pool or the network."""
    code = sqlstate(error)
    if code is not None:
        return classify_sqlstate(code)
    if isinstance(error, _TRANSIENT_CLIENT_ERRORS):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT
