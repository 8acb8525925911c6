"""What each command that got past the token check was answered: the consumer's idempotency
record, in the service's own database.

A command redelivered by JetStream (its reply could not be published, or the service died before
acking it) carries a token whose `jti` is already used, so the token check would refuse it. The
consumer looks the `jti` up here instead and sends the recorded answer again; with no record (the
first delivery never finished) it drops the command and the platform re-sends it with a fresh
token. Rows live as long as the token's `jti` is remembered. Every SQL statement on the table is
here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from examples.downstream_service.calls import Answer
from examples.downstream_service.replay import state_connection

_log = logging.getLogger(__name__)

TABLE = "command_answers"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS command_answers ("
    " jti TEXT PRIMARY KEY,"
    " idempotency_key TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " body JSONB NOT NULL,"
    " expires_at TIMESTAMPTZ NOT NULL)",
    "CREATE INDEX IF NOT EXISTS command_answers_expires_at_idx ON command_answers (expires_at)",
)
_RECORD = """
INSERT INTO command_answers (jti, idempotency_key, status, body, expires_at)
VALUES (%s, %s, %s, %s, to_timestamp(%s))
ON CONFLICT (jti) DO NOTHING
"""
_FIND = "SELECT idempotency_key, status, body FROM command_answers WHERE jti = %s"
_PURGE = "DELETE FROM command_answers WHERE expires_at <= to_timestamp(%s)"


class CommandAnswers:
    """The answer given to each accepted token's command, by `jti`. Thread-safe; blocking."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]] | None,
        *,
        timeout: timedelta,
        purge_interval: timedelta,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._timeout = timeout.total_seconds()
        self._purge_interval = purge_interval.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._table_ready = False
        self._purged_at: float | None = None

    def prepare(self) -> None:
        """Create the table if it is missing (idempotent; concurrent replicas wait in turn)."""
        with state_connection(self._pool, self._timeout) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (TABLE,))
            for statement in _CREATE:
                conn.execute(statement)
        self._table_ready = True

    def record(self, jti: str, idempotency_key: str, answer: Answer, keep_until: float) -> None:
        """Keep `answer` to the call made with token `jti` until `keep_until` (epoch seconds)."""
        if not self._table_ready:
            self.prepare()
        now = self._clock()
        with state_connection(self._pool, self._timeout) as conn:
            conn.execute(
                _RECORD, (jti, idempotency_key, answer.status, Jsonb(answer.body), keep_until)
            )
            if self._purge_due(now):
                deleted = conn.execute(_PURGE, (now,)).rowcount
                _log.debug("forgot %d expired command answers", deleted)

    def find(self, jti: str, idempotency_key: str | None) -> Answer | None:
        """The answer recorded for token `jti` under the same idempotency key, if any."""
        if not self._table_ready:
            self.prepare()
        with state_connection(self._pool, self._timeout) as conn:
            row = conn.execute(_FIND, (jti,)).fetchone()
        if row is None or row[0] != idempotency_key:
            return None
        return Answer(status=int(row[1]), body=dict(row[2]))

    def _purge_due(self, now: float) -> bool:
        with self._lock:
            if self._purged_at is not None and now - self._purged_at < self._purge_interval:
                return False
            self._purged_at = now
            return True
