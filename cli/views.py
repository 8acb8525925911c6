"""The tables people read: one function per API document, each returning Rich renderables.
Every value from the server is shown as text (never as Rich markup), with every character that
is not printable escaped (cli.client.one_line)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from cli.client import one_line

# Columns people search for and copy: never folded over two lines.
_KEYS = frozenset({"id", "status", "action", "occurredAt", "createdAt"})


def rollout_state(rollout: dict[str, Any]) -> str:
    """A rollout's status, with its reason when it has one."""
    reason = rollout.get("statusReason")
    return f"{rollout['status']} ({reason})" if reason else str(rollout["status"])


def _cell(value: Any) -> Text:
    # Text, not markup: a reason like "[x]" from the server is shown, not interpreted.
    if value is None:
        return Text("-")
    return Text(one_line(str(value)))


def _when(value: Any) -> Text:
    """An ISO timestamp to the second, for people."""
    if not isinstance(value, str):
        return _cell(value)
    return Text(one_line(value.replace("T", " ")[:19]))


def _fields(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    # A str title would be read as Rich markup: the id in it is the server's.
    table = Table(title=Text(one_line(title)), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else _cell(value))
    return table


def tenant_view(tenant: dict[str, Any]) -> list[RenderableType]:
    """A tenant: its fields, then one row per service's migration record."""
    rows: list[tuple[str, Any]] = [
        ("status", tenant["status"]),
        ("statusReason", tenant.get("statusReason")),
        ("name", tenant.get("name")),
        ("storageMode", tenant.get("storageMode")),
        ("slaTier", tenant.get("slaTier")),
        ("storageServer", tenant.get("storageServer")),
        ("jdbcUrl", tenant.get("jdbcUrl")),
        ("createdBy", tenant.get("createdBy")),
        ("createdAt", _when(tenant.get("createdAt"))),
        ("updatedAt", _when(tenant.get("updatedAt"))),
        ("workflowId", tenant.get("workflowId")),
    ]
    move = tenant.get("move")
    if move:
        rows += [
            ("move.fromServer", move.get("fromServer")),
            ("move.toServer", move.get("toServer")),
            ("move.phase", move.get("phase")),
            ("move.requestedBy", move.get("requestedBy")),
            ("move.reason", move.get("reason")),
            ("move.requestedAt", _when(move.get("requestedAt"))),
        ]
    deletion = tenant.get("deletion")
    if deletion:
        rows += [
            ("deletion.requestedBy", deletion.get("requestedBy")),
            ("deletion.reason", deletion.get("reason")),
            ("deletion.purgeAt", _when(deletion.get("purgeAt"))),
        ]
    views: list[RenderableType] = [_fields(f"Tenant {tenant['id']}", rows)]
    migrations = tenant.get("migrations") or []
    if migrations:
        table = Table(title="Migrations", title_justify="left")
        for column in ("service", "status", "version", "attempts", "lastError"):
            table.add_column(column, overflow="fold")
        for m in migrations:
            table.add_row(
                *(_cell(m.get(k)) for k in ("service", "status", "version", "attempts")),
                _cell(m.get("lastError")),
            )
        views.append(table)
    return views


def tenant_list_view(page: dict[str, Any]) -> list[RenderableType]:
    """Tenants, one row each, and the cursor to go on from when there are more."""
    table = Table(title=f"Tenants ({len(page['items'])})", title_justify="left")
    for column in ("id", "status", "slaTier", "storageMode", "name", "createdAt"):
        table.add_column(column, overflow="fold", no_wrap=column in _KEYS)
    for t in page["items"]:
        table.add_row(
            *(_cell(t.get(k)) for k in ("id", "status", "slaTier", "storageMode", "name")),
            _when(t.get("createdAt")),
        )
    views: list[RenderableType] = [table]
    if page.get("nextCursor"):
        views.append(Text(one_line(f"more: --cursor {page['nextCursor']}")))
    return views


def events_view(events: dict[str, Any]) -> list[RenderableType]:
    """A tenant's audit trail, oldest first."""
    table = Table(title="Events", title_justify="left")
    for column in ("occurredAt", "actor", "action", "status", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column in _KEYS)
    for e in events["items"]:
        change = (
            f"{e.get('oldStatus') or '-'} -> {e.get('newStatus')}" if e.get("newStatus") else None
        )
        table.add_row(
            _when(e.get("occurredAt")),
            _cell(e.get("actor")),
            _cell(e.get("action")),
            _cell(change),
            _cell(e.get("reason")),
        )
    return [table]


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(
        f"{counts[k]} {k}"
        for k in ("succeeded", "failed", "skipped", "running", "pending")
        if counts.get(k)
    )


def rollout_view(rollout: dict[str, Any]) -> list[RenderableType]:
    """A rollout: status and counts, one row per wave, its first failures."""
    counts = rollout["counts"]
    request = rollout.get("request") or {}
    rows: list[tuple[str, Any]] = [
        ("status", rollout_state(rollout)),
        ("services", ", ".join(rollout.get("services") or [])),
        ("tenants", f"{counts['total']} ({_counts(counts) or 'none'})"),
        ("concurrency", request.get("concurrency")),
        ("maxFailureRatio", request.get("maxFailureRatio")),
        ("passNumber", rollout.get("passNumber")),
        ("createdBy", rollout.get("createdBy")),
        ("createdAt", _when(rollout.get("createdAt"))),
    ]
    views: list[RenderableType] = [_fields(f"Rollout {rollout['id']}", rows)]
    waves = Table(title="Waves", title_justify="left")
    for column in ("wave", "status", "total", "succeeded", "failed", "skipped", "pending"):
        waves.add_column(column)
    for wave in rollout.get("waves") or []:
        c = wave["counts"]
        waves.add_row(
            _cell(wave["name"]),
            _cell(wave["status"]),
            *(_cell(c.get(k)) for k in ("total", "succeeded", "failed", "skipped", "pending")),
        )
    views.append(waves)
    failures = rollout.get("failures") or []
    if failures:
        table = Table(title="Failures", title_justify="left")
        for column in ("tenant", "service", "error"):
            table.add_column(column, overflow="fold")
        for f in failures:
            table.add_row(_cell(f.get("tenantId")), _cell(f.get("service")), _cell(f.get("error")))
        views.append(table)
    return views


def rollout_list_view(rollouts: dict[str, Any]) -> list[RenderableType]:
    """Rollouts, newest first."""
    table = Table(title=f"Rollouts ({len(rollouts['items'])})", title_justify="left")
    for column in ("id", "status", "services", "tenants", "createdBy", "createdAt"):
        table.add_column(column, overflow="fold", no_wrap=column in _KEYS)
    for r in rollouts["items"]:
        table.add_row(
            _cell(r["id"]),
            _cell(r["status"]),
            _cell(", ".join(r.get("services") or [])),
            _cell(f"{r['counts']['total']} ({_counts(r['counts']) or 'none'})"),
            _cell(r.get("createdBy")),
            _when(r.get("createdAt")),
        )
    return [table]


def versions_view(spread: dict[str, Any]) -> list[RenderableType]:
    """A service's version spread, and the `--require` verdict when one was asked."""
    table = Table()
    table.add_column("version", no_wrap=True)
    table.add_column("tenants", justify="right")
    for version, count in (spread.get("versions") or {}).items():
        table.add_row(_cell(version), _cell(count))
    header = Text(
        one_line(
            f"{spread['service']}: tenants with a record {spread.get('tenants')}, "
            f"failed {spread.get('failed')}, minVersion {spread.get('minVersion') or '-'}"
        )
    )
    return [header, table]


def _reachability(server: dict[str, Any]) -> str:
    """Whether the worker's last check reached the server, and when."""
    reachable = server.get("reachable")
    if reachable is None:
        return "not checked yet"
    checked = str(server.get("checkedAt") or "").replace("T", " ")[:19]
    return f"{'up' if reachable else 'DOWN'} at {checked}"


def _server_state(server: dict[str, Any]) -> str:
    reason = server.get("stateReason")
    return f"{server['state']} ({reason})" if reason else str(server["state"])


def drain_progress(server: dict[str, Any]) -> str:
    """A server's drain in one line ("-" when it was never drained)."""
    drain = server.get("drain")
    if not drain:
        return "-"
    done = drain["moved"] + drain["failed"]
    text = (
        f"{done}/{drain['total']}: {drain['moved']} moved, {drain['failed']} failed, "
        f"{drain['running']} running"
    )
    return text + (", ended" if drain.get("endedAt") else "")


def server_list_view(servers: dict[str, Any]) -> list[RenderableType]:
    """Storage servers in configuration order."""
    table = Table(title=f"Storage servers ({len(servers['items'])})", title_justify="left")
    columns = ("name", "pool", "state", "tenants", "tiers", "reachable", "version")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in {"name", "state"})
    for s in servers["items"]:
        table.add_row(
            _cell(s["name"]),
            _cell(s.get("pool")),
            _cell(s["state"]),
            _cell(f"{s.get('tenants')}/{s.get('maxTenants')}"),
            _cell(", ".join(s.get("tiers") or []) or "-"),
            _cell(_reachability(s)),
            _cell(s.get("serverVersion")),
        )
    return [table]


def server_view(server: dict[str, Any]) -> list[RenderableType]:
    """A storage server, then its cordons and uncordons when the document has them."""
    rows: list[tuple[str, Any]] = [
        ("state", _server_state(server)),
        ("pool", server.get("pool")),
        ("host", server.get("host")),
        ("tenants", f"{server.get('tenants')} of {server.get('maxTenants')}"),
        ("tiers", ", ".join(server.get("tiers") or []) or "-"),
        ("storageModes", ", ".join(server.get("storageModes") or [])),
        ("reachable", _reachability(server)),
        ("checkError", server.get("checkError")),
        ("serverVersion", server.get("serverVersion")),
        ("stateChangedBy", server.get("stateChangedBy")),
        ("stateChangedAt", _when(server.get("stateChangedAt"))),
        ("drain", drain_progress(server)),
    ]
    views: list[RenderableType] = [_fields(f"Storage server {server['name']}", rows)]
    failures = (server.get("drain") or {}).get("failures")
    if failures:
        table = Table(title="Drain failures", title_justify="left")
        for column in ("tenantId", "reason"):
            table.add_column(column, overflow="fold", no_wrap=column == "tenantId")
        for failure in failures:
            table.add_row(_cell(failure.get("tenantId")), _cell(failure.get("reason")))
        views.append(table)
    events = server.get("events")
    if events:
        table = Table(title="Events", title_justify="left")
        for column in ("occurredAt", "type", "actor", "reason"):
            table.add_column(column, overflow="fold", no_wrap=column == "occurredAt")
        for e in events:
            table.add_row(
                _when(e.get("occurredAt")),
                _cell(e.get("type")),
                _cell(e.get("actor")),
                _cell(e.get("reason")),
            )
        views.append(table)
    return views
