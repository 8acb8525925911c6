"""The OpenAPI document as clients see it: every error is an RFC 9457 problem.

FastAPI documents its own 422 shape and leaves other error responses without a body; this
states the real contract, so generated clients and the schemathesis fuzz test can rely on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from api.errors import PROBLEM_JSON

# Statuses any protected tenant operation may answer besides its own.
_COMMON_ERRORS = {"401", "403", "422", "503"}
# And those of any operation that takes a body (see api.guard for the order they are checked).
_BODY_ERRORS = {"400", "413", "415"}
# What FastAPI writes when a route says nothing of its own.
_FASTAPI_DEFAULTS = {"Unsuccessful Response", "Validation Error"}
_ERROR_DESCRIPTIONS = {
    "400": "The body is not parseable JSON; `position` is the byte where parsing stopped",
    "401": "Missing, invalid or expired bearer token",
    "403": "The token lacks the required scope",
    "404": "No such tenant",
    "409": "Conflict with the tenant's existence or status",
    "413": "The body is larger than the API accepts; `maxBytes` says how large it may be",
    "415": "The body is not declared as application/json",
    "422": "Invalid input; `errors` names each field",
    "503": "PostgreSQL or Temporal is unavailable",
}


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; extension members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:platform-service:problem:tenant-not-found"])
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = None
    position: int | None = Field(
        default=None, description="400: the byte offset where the body stopped parsing."
    )
    max_bytes: int | None = Field(
        default=None, alias="maxBytes", description="413: the largest body accepted."
    )


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def install_openapi(app: FastAPI) -> None:
    """Replace the app's OpenAPI generator with one that documents problem responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(components["Problem"].pop("$defs", {}))
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                codes = set(responses)
                if operation.get("security"):
                    codes |= _COMMON_ERRORS
                if "requestBody" in operation:
                    codes |= _BODY_ERRORS
                for code in sorted(c for c in codes if c.startswith(("4", "5"))):
                    # A route's own description (what 409 means for it) wins over the generic one.
                    own = responses.get(code, {}).get("description")
                    generic = _ERROR_DESCRIPTIONS.get(code, "Error")
                    responses[code] = {
                        "description": own if own and own not in _FASTAPI_DEFAULTS else generic,
                        "content": _problem_content(),
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
