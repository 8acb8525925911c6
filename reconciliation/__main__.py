"""`python -m reconciliation [--repair] [--prefix ID]`: print the drift report.

Exit code 0 when rows, workflows and storage agree, 1 when drift was found (repaired or not),
2 when PostgreSQL or Temporal cannot be reached (a storage server that cannot be read is listed
in the report, which is still printed, and its tenants' storage left unchecked).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from temporalio.service import RPCError

from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.telemetry.logging import configure_logging, redact
from infra.temporal import connect_client, exit_process
from reconciliation.reconciler import Reconciler, ReconciliationReport
from reconciliation.rollouts import RolloutRule
from tenancy.settings import Settings, get_settings


def render(report: ReconciliationReport) -> str:
    """The report as aligned text lines, one per drift."""
    lines = [f"reconciliation at {report.checked_at.isoformat(timespec='seconds')}"]
    for down in report.unreachable_servers:
        unchecked = f"its tenants' storage not checked: {down.error}"
        lines.append(f"  {'SERVER_UNREACHABLE':<24} {down.server:<40} {unchecked}")
    if not report.drift and not report.unreachable_servers:
        lines.append("no drift: rows, workflows and storage agree")
    for item in report.drift:
        mark = " [repaired]" if item.repaired else ""
        subject = item.tenant_id or f"rollout {item.rollout_id}"
        lines.append(f"  {item.kind.value:<24} {subject:<40} {item.detail}{mark}")
    return "\n".join(lines) + "\n"


async def reconcile(
    settings: Settings, *, repair: bool, id_prefix: str, actor: str | None = None
) -> ReconciliationReport:
    """One pass with the given settings' databases and Temporal."""
    client = await connect_client(settings)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.require_database_url(), open=False, min_size=1, max_size=4
    )
    async with pool:
        reconciler = Reconciler(
            TenantRepository(pool),
            client,
            servers=settings.storage_fleet(),
            task_queue=settings.task_queue,
            # The API records a move, then starts its run within its own timeout.
            settled_for=settings.create_timeout * 2,
            id_prefix=id_prefix,
            # A prefix narrows the pass to some tenants: rollouts are checked by a whole pass.
            rollouts=None if id_prefix else RolloutRule(RolloutRepository(pool), client, settings),
        )
        return await reconciler.run(repair=repair, actor=actor)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one pass, print it; 0 without drift, 1 with, 2 when a server is unreachable."""
    parser = argparse.ArgumentParser(prog="python -m reconciliation", description=__doc__)
    parser.add_argument("--repair", action="store_true", help="restart stuck tenants' workflows")
    parser.add_argument(
        "--prefix", default="", help="only tenants whose id starts with this (and no rollouts)"
    )
    args = parser.parse_args(argv)
    config = settings or get_settings()
    configure_logging(config)
    try:
        # Repairs name who ran them in the audit trail: the operating-system user.
        actor = f"cli:{getpass.getuser()}"
        report = asyncio.run(
            reconcile(config, repair=args.repair, id_prefix=args.prefix, actor=actor)
        )
    except (OSError, RuntimeError, psycopg.OperationalError, RPCError) as exc:
        # The SDK reports an unreachable server as a RuntimeError from its native client.
        sys.stderr.write(f"reconciliation failed: {redact(str(exc))}\n")
        return 2
    sys.stdout.write(render(report))
    if report.unreachable_servers:
        return 2
    return 1 if report.drift else 0


if __name__ == "__main__":
    exit_process(main())
