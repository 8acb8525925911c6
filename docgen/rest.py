"""reference/rest.md and reference/openapi.json: the API's OpenAPI document as the app builds it
(no database or Temporal needed: nothing is started), and a page of its operations by tag with
the scope each one checks (read from the routes' `ScopeCheck` dependencies)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from api.guard import required_scopes
from api.main import create_app
from docgen.markdown import anchor, banner, cell, code, prose, table
from tenancy.settings import Settings

PATH = "reference/rest.md"
OPENAPI_PATH = "reference/openapi.json"
SOURCES = "the API's OpenAPI document (api/main.py create_app, api/openapi.py)"
_METHODS = ("get", "post", "put", "patch", "delete")


@cache
def _app_document() -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    # Defaults only, not the environment: the document is the same wherever it is generated.
    app = create_app(settings=Settings.model_construct())
    scopes: dict[tuple[str, str], str] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for check in required_scopes(route.dependant):
            others = sorted(check.accepted - {check.scope})
            named = " or ".join(code(s) for s in (check.scope, *others))
            for method in context.methods or ():
                scopes[(method.lower(), route.path_format)] = named
    return app.openapi(), scopes


def document() -> dict[str, Any]:
    """The OpenAPI document, as GET /openapi.json serves it."""
    return _app_document()[0]


def openapi_json() -> str:
    """reference/openapi.json: the document with sorted keys, for download and diffs."""
    return json.dumps(document(), sort_keys=True, indent=2) + "\n"


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of the document, in its order."""
    for path, item in document()["paths"].items():
        for method in _METHODS:
            if method in item:
                yield method, path, item[method]


def schema_name(schema: dict[str, Any]) -> str:
    """A schema as a reader names it: its component's name, `list of X`, `X or null`."""
    if "$ref" in schema:
        return code(str(schema["$ref"]).rsplit("/", 1)[-1])
    if "anyOf" in schema:
        return " or ".join(schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array" and "items" in schema:
        return f"list of {schema_name(schema['items'])}"
    if "enum" in schema:
        return "one of " + ", ".join(code(str(v)) for v in schema["enum"])
    if "type" in schema:
        return str(schema["type"])
    return "any"


def _with_default(schema: dict[str, Any]) -> str:
    name = schema_name(schema)
    if schema.get("default") is not None:
        return f"{name}, default {code(json.dumps(schema['default']))}"
    return name


def _body(content: dict[str, Any]) -> str:
    return ", ".join(
        f"{schema_name(media.get('schema', {}))} ({code(media_type)})"
        for media_type, media in content.items()
    )


def _operation(method: str, path: str, operation: dict[str, Any], scope: str | None) -> list[str]:
    out = [f"### `{method.upper()} {path}`\n", f"**{cell(operation.get('summary', ''))}**\n"]
    if operation.get("description"):
        out.append(f"{cell(operation['description'])}\n")
    facts = [f"- Scope: {scope}" if scope else "- Scope: none (no token needed)"]
    body = operation.get("requestBody")
    if body:
        required = "" if body.get("required") else " (optional)"
        facts.append(f"- Request body: {_body(body.get('content', {}))}{required}")
    out.append("\n".join(facts) + "\n")
    parameters = operation.get("parameters", [])
    if parameters:
        out.append(
            table(
                ("Parameter", "In", "Type", "Required", "Description"),
                (
                    [
                        code(p["name"]),
                        p["in"],
                        _with_default(p.get("schema", {})),
                        "yes" if p.get("required") else "no",
                        cell(p.get("description", "")),
                    ]
                    for p in parameters
                ),
            )
        )
    responses = operation.get("responses", {})
    out.append(
        table(
            ("Status", "Meaning", "Body"),
            (
                [code(status), cell(r.get("description", "")), _body(r.get("content", {}))]
                for status, r in sorted(responses.items())
            ),
        )
    )
    return out


def render() -> str:
    """The page."""
    doc = document()
    scopes = _app_document()[1]
    info = doc["info"]
    bearer: dict[str, Any] = next(iter(doc["components"].get("securitySchemes", {}).values()), {})
    out = [
        banner(SOURCES),
        "# REST API\n",
        f"{prose(info.get('summary'))} Version {info['version']}, OpenAPI {doc['openapi']}.\n",
        "The whole document: [openapi.json](openapi.json) (the running API serves it on "
        "`/openapi.json`, and its interactive docs on `/docs`). Request and answer bodies are "
        "JSON with camelCase fields; every error is an RFC 9457 problem "
        "(`application/problem+json`, schema `Problem`).\n",
        f"**Authentication.** A bearer token: {cell(bearer.get('description', ''))}\n",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for method, path, operation in operations():
        by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append(
            (method, path, operation)
        )
    for tag, members in by_tag.items():
        out += [
            f"## {tag.capitalize()}\n",
            table(
                ("Method", "Path", "Summary", "Scope"),
                (
                    [
                        method.upper(),
                        f"[{code(path)}](#{anchor(f'{method} {path}')})",
                        cell(operation.get("summary", "")),
                        scopes.get((method, path), "none"),
                    ]
                    for method, path, operation in members
                ),
            ),
        ]
        for method, path, operation in members:
            out += _operation(method, path, operation, scopes.get((method, path)))
    return "\n".join(out)
