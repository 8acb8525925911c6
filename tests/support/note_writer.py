"""A service's writes through a move: `NoteWriter` calls the reference service's runtime
endpoint (`POST /tenants/{id}/notes`) at a steady rate, each write with a text of its own, and
keeps every answer (status, when sent, when answered); `notes_on` reads the texts a server
holds for the tenant, as its superuser, to see where each write ended."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tenancy.naming import storage_name
from tests.support.storage_fleet import STORAGE_DATABASE

# The reference service's notes table (examples.downstream_service.runtime) for backend-service.
NOTES_TABLE = "backend_service_notes"


@dataclass(frozen=True)
class Write:
    """One call: its text, its answer's status (0: no answer) and when (time.monotonic())."""

    text: str
    status: int
    sent: float
    answered: float

    @property
    def acknowledged(self) -> bool:
        """Answered 2xx: the service said the note is stored."""
        return 200 <= self.status < 300


@dataclass
class NoteWriter:
    """Writes notes of `tenant_id` through `service` every `1 / rate` seconds, each call on
    its own (a call that waits does not hold the next one back), until stopped."""

    service: httpx.AsyncClient
    tenant_id: str
    rate: float = 50.0
    writes: list[Write] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def acknowledged_since(self, index: int) -> int:
        """How many of the writes answered after the first `index` ones were acknowledged."""
        return len([w for w in self.writes[index:] if w.acknowledged])

    def start(self) -> None:
        """Begin writing in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[Write]:
        """Stop sending, wait for the calls under way; every write, in the order sent."""
        self._stop.set()
        assert self._task is not None
        await self._task
        return sorted(self.writes, key=lambda w: w.sent)

    async def _run(self) -> None:
        calls: list[asyncio.Task[None]] = []
        interval = 1 / self.rate
        next_at = time.monotonic()
        prefix = uuid.uuid4().hex[:8]
        while not self._stop.is_set():
            calls.append(asyncio.create_task(self._write(f"{prefix}-{len(calls):06d}")))
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*calls)

    async def _write(self, text: str) -> None:
        sent = time.monotonic()
        try:
            answer = await self.service.post(
                f"/tenants/{self.tenant_id}/notes", json={"text": text}
            )
            status = answer.status_code
        except httpx.HTTPError:
            status = 0
        self.writes.append(Write(text, status, sent, time.monotonic()))


def refused_windows(writes: list[Write]) -> list[float]:
    """The lengths (seconds) of the stretches in which the service refused writes: from the
    first refused write's sending to the sending of the next write it acknowledged (or to the
    last refused one's answer), in `writes`' order (as sent)."""
    windows: list[float] = []
    began: float | None = None
    last_answer = 0.0
    for write in writes:
        if not write.acknowledged:
            began = write.sent if began is None else began
            last_answer = max(last_answer, write.answered)
        elif began is not None:
            windows.append(write.sent - began)
            began = None
    if began is not None:
        windows.append(last_answer - began)
    return windows


def notes_on(superuser_url: str, tenant_id: str, mode: str = "SCHEMA") -> set[str] | None:
    """The notes' texts of the tenant on the server of `superuser_url` (its schema in the
    storage database, or its own database), or None when its storage or the table is not
    there."""
    name = storage_name(tenant_id)
    database, schema = (STORAGE_DATABASE, name) if mode == "SCHEMA" else (name, "public")
    table = sql.Identifier(schema, NOTES_TABLE)
    try:
        with psycopg.connect(make_conninfo(superuser_url, dbname=database)) as conn:
            rows = conn.execute(sql.SQL("SELECT text FROM {}").format(table)).fetchall()
    except (
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.OperationalError,
    ):
        return None
    return {text for (text,) in rows}
