"""`/.well-known/jwks.json`: the public keys downstream services verify platform calls with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", response_model=dict[str, Any])
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    """The platform's signing keys as a JWK Set (RFC 7517)."""
    # Short caching: verifiers pick up a rotation within minutes.
    response.headers["Cache-Control"] = "public, max-age=300"
    document: dict[str, Any] = request.state.jwks
    return document
