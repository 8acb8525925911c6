"""reference/events.md: every lifecycle event type from its JSON Schema (events/schemas/*.json),
the CloudEvents envelope once, then each type's meaning and `data` fields."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from docgen.markdown import anchor, banner, cell, code, table
from infra.events import cloudevents

PATH = "reference/events.md"
SOURCES = "events/schemas/*.json and infra/events/cloudevents.py"
SCHEMAS = Path(__file__).resolve().parents[1] / "events" / "schemas"


@cache
def schemas() -> tuple[dict[str, Any], ...]:
    """Every event type's schema, by type name."""
    loaded = [json.loads(path.read_bytes()) for path in sorted(SCHEMAS.glob("*.json"))]
    return tuple(sorted(loaded, key=lambda s: str(s["title"])))


def type_of(schema: dict[str, Any]) -> str:
    """A JSON Schema's type as a reader says it: `string or null`, one of `A`, `B`, ..."""
    if "const" in schema:
        return code(json.dumps(schema["const"]).strip('"'))
    if "enum" in schema:
        return "one of " + ", ".join(code(str(v)) for v in schema["enum"])
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(type_of(s) for s in schema.get("oneOf", schema.get("anyOf", [])))
    kind = schema.get("type", "any")
    names = kind if isinstance(kind, list) else [kind]
    shown = " or ".join(
        f"array of {type_of(schema.get('items', {}))}" if n == "array" else str(n) for n in names
    )
    if "format" in schema:
        shown += f" ({schema['format']})"
    if "minimum" in schema:
        shown += f", at least {schema['minimum']}"
    if "pattern" in schema and "format" not in schema:
        shown += f" matching {code(schema['pattern'])}"
    return shown


def _fields(properties: dict[str, Any], required: list[str], prefix: str = "") -> list[list[str]]:
    rows = []
    for name, spec in properties.items():
        rows.append(
            [
                code(prefix + name),
                type_of(spec),
                "yes" if name in required else "no",
                cell(spec.get("description", "")),
            ]
        )
        if spec.get("type") == "object" and "properties" in spec:
            rows += _fields(spec["properties"], spec.get("required", []), f"{prefix}{name}.")
    return rows


# What each envelope attribute holds (infra.events.cloudevents builds the envelope).
_ENVELOPE = {
    "specversion": "The CloudEvents version.",
    "type": "The event type (below).",
    "source": "The deployment that published it: `PLATFORM_EVENTS_SOURCE` "
    f"(`{cloudevents.DEFAULT_SOURCE}` by default), stamped by the relay.",
    "id": "A UUID, the de-duplication key.",
    "time": "When the audit event was recorded (UTC), as the committed row says.",
    "subject": "The tenant id, or the rollout id for a rollout event.",
    "datacontenttype": "The media type of `data`.",
    "data": "The event's own fields (below, per type).",
}


def _envelope(example: dict[str, Any]) -> str:
    rows = []
    for name, spec in example["properties"].items():
        shown = "string" if name in ("type", "subject") else type_of(spec)
        rows.append([code(name), shown, cell(_ENVELOPE.get(name, spec.get("description", "")))])
    return table(("Attribute", "Type", "Meaning"), rows)


def render() -> str:
    """The page."""
    loaded = schemas()
    out = [
        banner(SOURCES),
        "# Event types\n",
        f"Every lifecycle event is CloudEvents {cloudevents.SPEC_VERSION}, JSON structured mode "
        "(`Content-Type: application/cloudevents+json` on NATS). A JSON Schema per type is in "
        "`events/schemas/<type>.json`; the tests validate emitted events against them.\n",
        "Each event of a family goes to the NATS subject `platform.<family>.<subject>.<name>` "
        "(stream `PLATFORM_EVENTS`), or to the Kafka topic `platform.<family>` keyed by its "
        "subject; the families are "
        + ", ".join(code(f.value) for f in cloudevents.Family)
        + ", and `<name>` is the part of the type between the family and the version.\n",
        "## The envelope\n",
        "Every event carries these attributes; a consumer drops duplicates by `id`.\n",
        _envelope(loaded[0]),
        "## Types\n",
        table(
            ("Type", "When"),
            (
                [f"[{code(s['title'])}](#{anchor(s['title'])})", cell(s["description"])]
                for s in loaded
            ),
        ),
    ]
    for schema in loaded:
        data = schema["properties"]["data"]
        out += [
            f"### {schema['title']}\n",
            f"{cell(schema['description'])}\n",
            f"`subject`: {cell(schema['properties']['subject'].get('description', ''))}\n",
            table(
                ("Field of `data`", "Type", "Required", "Description"),
                _fields(data["properties"], data.get("required", [])),
            ),
        ]
    return "\n".join(out)
