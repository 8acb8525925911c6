"""Short-lived JWTs that the platform signs for each downstream migrate call, and the JWKS
that publishes the public keys to verify them.

Only the current key signs. The JWKS lists it first, then the next keys (published ahead of
a rotation, so that a verifier that refetches on an unknown `kid` already finds the key the
platform will switch to) and the previous ones (for tokens signed before the switch). The
docs/integrating/signed-calls.md gives the order and the waits.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

from infra.security.keys import algorithm_for, load_private_key, load_public_key, public_jwk

ISSUER = "platform-service"


class CallSigner:
    """Mints one token per call: audience = the service, a `tenantId` claim, a unique `jti`."""

    def __init__(self, key_file: Path, ttl: timedelta) -> None:
        self._key = load_private_key(key_file)
        self._algorithm = algorithm_for(self._key)
        self._kid = public_jwk(self._key)["kid"]
        self._ttl = int(ttl.total_seconds())

    def token(self, *, audience: str, tenant_id: str) -> str:
        """A fresh token for one request to `audience` about `tenant_id`."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "sub": ISSUER,
            "tenantId": tenant_id,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid})


def jwks_document(
    key_file: Path,
    previous_key_files: tuple[Path, ...] = (),
    next_key_files: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """`{"keys": [...]}`: the current signing key's public JWK, then the next ones, then the
    previous ones; a key listed twice is published once."""
    keys: dict[str, dict[str, Any]] = {}
    for path in (key_file, *next_key_files, *previous_key_files):
        jwk = public_jwk(load_public_key(path))
        keys.setdefault(jwk["kid"], jwk)
    return {"keys": list(keys.values())}
