"""reference/metrics.md: every metric the platform exports, from the catalogue
`infra.telemetry.catalogue.METRICS`, by the process that serves it."""

from __future__ import annotations

import inspect

import infra.telemetry.catalogue as catalogue
from docgen.markdown import banner, cell, code, prose, table
from infra.telemetry.catalogue import METRICS, MetricDoc, Process

PATH = "reference/metrics.md"
SOURCES = "infra/telemetry/catalogue.py"

# Where each process serves its metrics, for the section intros.
_SERVED: dict[Process, tuple[str, str]] = {
    "worker": (
        "The worker",
        "Served on `http://PLATFORM_WORKER_METRICS_ADDRESS/metrics` (off unless the address is "
        "set; `make dev` sets `127.0.0.1:9464`).",
    ),
    "api": (
        "The API",
        "Served on the API's own `/metrics` (no token needed; with several API workers the "
        "endpoint adds every process up).",
    ),
}
_UNITS = {"s": "seconds", "ms": "milliseconds"}


def _row(doc: MetricDoc) -> list[str]:
    return [
        code(doc.name),
        doc.kind,
        ", ".join(code(label) for label in doc.labels) or "none",
        _UNITS.get(doc.unit, doc.unit) or "",
        "<br>".join(code(series) for series in doc.series_names()),
        cell(doc.help),
    ]


def render() -> str:
    """The page."""
    # The catalogue's first paragraph is about the catalogue itself; the rest is how names
    # are served.
    served = inspect.cleandoc(catalogue.__doc__ or "").split("\n\n")[1:]
    out = [
        banner(SOURCES),
        "# Metrics\n",
        "Every metric the platform exports, under the process that serves it. The alert rules "
        "name only these series, and a test scrapes a real worker and a real API to hold this "
        "list to what they serve.\n",
        *(f"{prose(paragraph)}\n" for paragraph in served),
    ]
    for process, (title, where) in _SERVED.items():
        docs = [d for d in METRICS if d.process == process]
        if not docs:
            continue
        out += [
            f"## {title}\n",
            f"{where}\n",
            table(("Metric", "Kind", "Labels", "Unit", "Served as", "Meaning"), map(_row, docs)),
        ]
    return "\n".join(out)
