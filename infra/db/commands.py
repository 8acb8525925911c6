"""All SQL of event-driven calls (`downstream_commands`): a command's sends and the replies
taken for it, and the pruning of settled commands past their retention.

A row is one logical call (one idempotency key). Each send bumps `attempt` and keeps the task
token of the activity attempt that waits; a reply is taken at most once per meaning: a final one
(`succeeded`, `rejected`) once per command, a `failed` one once per send and only for the newest
send, so a late failure never fails a newer attempt and a duplicate never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from infra.events.commands import CommandType, Reply, ReplyOutcome


@dataclass(frozen=True)
class CommandRow:
    """A command as stored."""

    command_id: str
    kind: str
    tenant_id: str
    service: str
    idempotency_key: str
    max_attempts: int | None
    attempt: int
    task_token: bytes | None
    sent_at: datetime | None
    outcome: str | None
    outcome_attempt: int | None
    version: str | None
    reason: str | None
    replied_at: datetime | None
    created_at: datetime

    @property
    def settled(self) -> bool:
        """A final reply came: the call succeeded or was rejected."""
        return self.outcome in (ReplyOutcome.SUCCEEDED, ReplyOutcome.REJECTED)

    @property
    def unanswered_send(self) -> bool:
        """The newest send went out and no reply to it came (its wait ran out)."""
        return (
            self.sent_at is not None and not self.settled and self.outcome_attempt != self.attempt
        )

    def answered(self, attempt: int) -> bool:
        """Whether send `attempt` has its reply: a final one, or a failure of that send."""
        return self.settled or (
            self.outcome == ReplyOutcome.FAILED and self.outcome_attempt == attempt
        )


class CommandRepository:
    """Reads and writes of `downstream_commands` on the metadata pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, command_id: str) -> CommandRow | None:
        """The command, or None if it was never sent."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(CommandRow))
            await cur.execute(
                "SELECT * FROM downstream_commands WHERE command_id = %s", (command_id,)
            )
            return await cur.fetchone()

    async def next_send(
        self,
        *,
        command_id: str,
        kind: CommandType,
        tenant_id: str,
        service: str,
        idempotency_key: str,
        max_attempts: int | None,
        task_token: bytes | None,
    ) -> int | None:
        """Number the next send of the command (1 for the first) and keep the task token that
        waits for its reply; None when a final reply is already there (nothing to send)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                INSERT INTO downstream_commands AS c
                    (command_id, kind, tenant_id, service, idempotency_key, max_attempts,
                     attempt, task_token)
                VALUES (%(id)s, %(kind)s, %(tenant)s, %(service)s, %(key)s, %(max)s, 1, %(token)s)
                ON CONFLICT (command_id) DO UPDATE
                    SET attempt = c.attempt + 1, task_token = EXCLUDED.task_token, sent_at = NULL
                    WHERE c.outcome IS NULL OR c.outcome = 'failed'
                RETURNING attempt
                """,
                {
                    "id": command_id,
                    "kind": kind.value,
                    "tenant": tenant_id,
                    "service": service,
                    "key": idempotency_key,
                    "max": max_attempts,
                    "token": task_token,
                },
            )
            row = await cur.fetchone()
            return None if row is None else int(row[0])

    async def mark_sent(self, command_id: str, attempt: int) -> None:
        """The bus took send `attempt`: its wait for a reply has started."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE downstream_commands SET sent_at = now()
                WHERE command_id = %s AND attempt = %s
                """,
                (command_id, attempt),
            )

    async def take_reply(self, reply: Reply) -> CommandRow | None:
        """Record `reply` if it answers a command still waiting; None when it is for an unknown
        command, another service or tenant, a settled command, or a failure of a send that is
        not the newest (or one already taken)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(CommandRow))
            await cur.execute(
                """
                UPDATE downstream_commands
                SET outcome = %(outcome)s, outcome_attempt = %(attempt)s, version = %(version)s,
                    reason = %(reason)s, replied_at = now()
                WHERE command_id = %(id)s AND kind = %(kind)s AND service = %(service)s
                  AND tenant_id = %(tenant)s AND %(attempt)s <= attempt
                  AND (outcome IS NULL OR outcome = 'failed')
                  AND (%(outcome)s <> 'failed'
                       OR (attempt = %(attempt)s
                           AND outcome_attempt IS DISTINCT FROM %(attempt)s))
                RETURNING *
                """,
                {
                    "outcome": reply.outcome.value,
                    "attempt": reply.attempt,
                    "version": reply.version,
                    "reason": reply.reason,
                    "id": reply.command_id,
                    "kind": reply.kind.value,
                    "service": reply.service,
                    "tenant": reply.tenant_id,
                },
            )
            return await cur.fetchone()

    async def prune_settled(self, older_than: timedelta, limit: int) -> int:
        """Delete at most `limit` commands settled (succeeded or rejected) more than
        `older_than` ago, in one short transaction; returns how many went. A command still
        waiting for a reply, or whose last reply was a failure, is never among them: a later
        send under its idempotency key finds it."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                DELETE FROM downstream_commands WHERE command_id = ANY(ARRAY(
                    SELECT command_id FROM downstream_commands
                    WHERE outcome IN ('succeeded', 'rejected') AND replied_at < now() - %(age)s
                    LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
                """,
                {"age": older_than, "limit": limit},
            )
            return int(cur.rowcount)
