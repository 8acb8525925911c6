"""The platform's side of a call, for the downstream tests: keys, tokens, a JWKS server.

Valid tokens come from the platform's own `CallSigner`; the invalid ones are built from a valid
token by changing one thing, so each test shows that exactly that thing is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.downstream_service.settings import DownstreamSettings
from infra.security.keys import algorithm_for, generate_private_key, load_private_key, public_jwk
from infra.security.signing import CallSigner, jwks_document

TOKEN_TTL = timedelta(minutes=5)
BACKEND = "backend-service"


def write_public_key(private_key_file: Path, path: Path) -> Path:
    """Write the public half of `private_key_file` to `path` as PEM, as an operator would."""
    public = load_private_key(private_key_file).public_key()
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@dataclass(frozen=True)
class PlatformKey:
    """One platform signing key: its private PEM, its public PEM and a signer using it."""

    private_file: Path
    public_file: Path

    @classmethod
    def generate(cls, folder: Path, name: str) -> PlatformKey:
        """A new EC P-256 key in `folder`."""
        private = folder / f"{name}.pem"
        generate_private_key(private)
        return cls(private, write_public_key(private, folder / f"{name}.pub.pem"))

    @property
    def kid(self) -> str:
        """The key id the platform puts in its tokens' headers."""
        kid: str = public_jwk(load_private_key(self.private_file))["kid"]
        return kid

    def token(self, tenant_id: str, audience: str = BACKEND) -> str:
        """A fresh token, minted exactly as the platform's worker mints it."""
        return CallSigner(self.private_file, TOKEN_TTL).token(
            audience=audience, tenant_id=tenant_id
        )

    def headers(
        self,
        tenant_id: str,
        audience: str = BACKEND,
        *,
        key: str | None = None,
        token: str | None = None,
    ) -> dict[str, str]:
        """Headers of a platform call: a fresh idempotency key and a fresh bearer token."""
        return {
            "Idempotency-Key": key or secrets.token_hex(8),
            "Authorization": "Bearer " + (token or self.token(tenant_id, audience)),
        }

    def settings(self, server_url: str | None, **overrides: Any) -> DownstreamSettings:
        """Settings of a service that verifies with this key's public PEM file."""
        values: dict[str, Any] = {
            "database_url": server_url,
            "platform_public_key_file": self.public_file,
            **overrides,
        }
        return DownstreamSettings(**values)


def claims_of(token: str) -> dict[str, Any]:
    """The claims of `token`, unverified."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class Kid(Enum):
    """`resign`'s choice of header `kid` when it is not a given string."""

    KEEP = "keep"
    NONE = "none"


def resign(token: str, key: PlatformKey, *, kid: str | Kid = Kid.KEEP, **changes: Any) -> str:
    """`token` with `changes` to its claims (None removes one), signed again with `key`.

    The header keeps the original `kid` unless `kid` is a new one or `Kid.NONE`.
    """
    claims = {**claims_of(token), **changes}
    claims = {name: value for name, value in claims.items() if value is not None}
    private = load_private_key(key.private_file)
    headers: dict[str, Any] = {}
    if kid is Kid.KEEP:
        headers["kid"] = jwt.get_unverified_header(token)["kid"]
    elif isinstance(kid, str):
        headers["kid"] = kid
    return jwt.encode(claims, private, algorithm=algorithm_for(private), headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def with_header(token: str, header: dict[str, Any]) -> str:
    """`token` with its header replaced by `header`, payload and signature untouched."""
    _, payload, signature = token.split(".")
    return f"{_b64(json.dumps(header).encode())}.{payload}.{signature}"


def unsigned(token: str) -> str:
    """`token`'s claims with `alg: none` and no signature (RFC 7519 section 6)."""
    return _segments({"alg": "none", "typ": "JWT"}, claims_of(token)) + "."


def hs256(token: str, secret: bytes) -> str:
    """`token`'s claims as an HS256 token with `secret` as the HMAC key.

    Built by hand: PyJWT itself refuses a PEM key as an HMAC secret, which is the point of the
    attack (a verifier that trusts the header's `alg` would check it with its public key).
    """
    signing_input = _segments({"alg": "HS256", "typ": "JWT"}, claims_of(token))
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


@dataclass
class JwksServer:
    """Serves a JWK Set that a test can change, failing with 503 while `failing`; counts fetches."""

    document: dict[str, Any]
    failing: bool = False
    fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, *keys: PlatformKey) -> None:
        """Publish `keys`, the first being the current one, as the platform does."""
        document = jwks_document(keys[0].private_file, tuple(k.private_file for k in keys[1:]))
        with self._lock:
            self.document = document

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            self.fetches += 1
            if self.failing:
                return JSONResponse({"detail": "starting"}, status_code=503)
            return JSONResponse(self.document)

    def app(self) -> Starlette:
        """The ASGI app to serve."""
        return Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])
