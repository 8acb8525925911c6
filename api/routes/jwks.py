"""`/.well-known/jwks.json`: the public keys downstream services verify platform calls with."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

# How long verifiers may cache the key set. A rotation publishes the next key at least this
# long before signing with it (docs/integrating/signed-calls.md).
JWKS_MAX_AGE = timedelta(minutes=5)

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", response_model=dict[str, Any])
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    """The platform's signing keys as a JWK Set (RFC 7517): current, next, previous."""
    response.headers["Cache-Control"] = f"public, max-age={int(JWKS_MAX_AGE.total_seconds())}"
    document: dict[str, Any] = request.state.jwks
    return document
