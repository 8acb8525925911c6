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

from psycopg.types.json import Jsonb

from examples.downstream_service.calls import Answer
from examples.downstream_service.replay import ExpiringTable

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


class CommandAnswers(ExpiringTable):
    """The answer given to each accepted token's command, by `jti`. Thread-safe; blocking."""

    table = TABLE
    create = _CREATE
    purge = _PURGE

    def record(self, jti: str, idempotency_key: str, answer: Answer, keep_until: float) -> None:
        """Keep `answer` to the call made with token `jti` until `keep_until` (epoch seconds)."""
        now = self._clock()
        with self._ready_connection() as conn:
            conn.execute(
                _RECORD, (jti, idempotency_key, answer.status, Jsonb(answer.body), keep_until)
            )
            self._purge_if_due(conn, now)

    def find(self, jti: str, idempotency_key: str | None) -> Answer | None:
        """The answer recorded for token `jti` under the same idempotency key, if any."""
        with self._ready_connection() as conn:
            row = conn.execute(_FIND, (jti,)).fetchone()
        if row is None or row[0] != idempotency_key:
            return None
        return Answer(status=int(row[1]), body=dict(row[2]))
