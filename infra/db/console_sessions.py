"""All SQL of console sign-outs: the tokens whose console session was ended before they
expired, by their sha256, until their expiry (migration 0013)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

# Expired rows deleted per sign-out: sign-outs outpace expiries, so the table stays bounded
# without a sweeper, and no purge holds many row locks.
PURGE_BATCH = 100


class ConsoleSignOuts:
    """Signed-out console sessions, shared by every API process through PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def remember(self, token_sha256: bytes, expires_at: datetime) -> None:
        """Refuse the session of this token until `expires_at` (the token's own expiry), and
        forget a batch of sign-outs whose tokens have expired."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO console_sign_outs (token_sha256, expires_at) VALUES (%s, %s)
                ON CONFLICT (token_sha256) DO NOTHING
                """,
                (token_sha256, expires_at),
            )
            await conn.execute(
                """
                DELETE FROM console_sign_outs WHERE token_sha256 IN (
                    SELECT token_sha256 FROM console_sign_outs
                    WHERE expires_at < now()
                    ORDER BY expires_at
                    LIMIT %s
                    FOR UPDATE SKIP LOCKED
                )
                """,
                (PURGE_BATCH,),
            )

    async def signed_out(self, token_sha256: bytes) -> bool:
        """Whether the session of this token was signed out (and the token has not expired)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM console_sign_outs WHERE token_sha256 = %s AND expires_at > now()",
                (token_sha256,),
            )
            return await cur.fetchone() is not None
