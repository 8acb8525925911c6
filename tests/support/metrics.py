"""Reading a Prometheus endpoint the way a scraper does."""

from __future__ import annotations

import re
from collections import defaultdict

import httpx

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Exposition lines read as written: names exactly as served (no `_total` added).
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition."""
    samples: Samples = {}
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            labels = frozenset(_LABEL.findall(match["labels"] or ""))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


async def scrape(address: str) -> Samples:
    """Every sample served at `http://{address}/metrics`."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{address}/metrics")
    response.raise_for_status()
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there is none."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    return sum(found) if found else None


def label_names(
    samples: Samples, prefix: str, ignored: frozenset[str] = frozenset()
) -> dict[str, set[frozenset[str]]]:
    """Each served series name starting with `prefix` -> the label-name sets its samples
    carry (without `ignored`)."""
    served: dict[str, set[frozenset[str]]] = defaultdict(set)
    for name, labels in samples:
        if name.startswith(prefix):
            served[name].add(frozenset(key for key, _ in labels) - ignored)
    return dict(served)
