"""Links from the console to a workflow run in the Temporal Web UI."""

from __future__ import annotations

from urllib.parse import quote


def run_url(ui_url: str | None, namespace: str, workflow_id: str) -> str | None:
    """The Web UI's page of `workflow_id` (its newest run); None without
    PLATFORM_TEMPORAL_UI_URL."""
    if not ui_url:
        return None
    return (
        f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )
