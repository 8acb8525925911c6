"""Signed replies to the platform's commands: a compact JWS (a JWT) per reply.

The service signs with its own reply key (`DOWNSTREAM_REPLY_KEY_FILE`, a PEM private key: RS256
for RSA, ES256 for EC P-256); the platform verifies with the public half it is configured with,
so a reply nobody else could have sent is the only one that changes a tenant. Claims, as the
protocol writes them: `iss` = this service, `aud` = `platform-service`, `iat`, `exp` = iat +
300, a random `jti`, `type`, `commandId`, `attempt`, `tenantId`, and `version` (TenantMigrated)
or `retryable` and `reason` (the *Failed types). The JWS header names the key: `kid` = its RFC
7638 JWK thumbprint, which the platform computes from the public key it holds, so a key can be
rolled (the platform holding the old and the new one) without agreeing on names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PLATFORM_AUDIENCE = "platform-service"
REPLY_TTL_SECONDS = 300
# One short line: the platform shows it as the tenant's last error.
_REASON_MAX = 300
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
# The members of each key type that RFC 7638 hashes.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


class ReplyType(StrEnum):
    """The four replies."""

    MIGRATED = "TenantMigrated"
    MIGRATION_FAILED = "TenantMigrationFailed"
    TORN_DOWN = "TenantTornDown"
    TEARDOWN_FAILED = "TenantTeardownFailed"


class ReplyKeyInvalid(ValueError):
    """The reply key file holds no usable private key."""


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _signing_key(key: object, path: Path) -> tuple[SigningKey, str]:
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ReplyKeyInvalid(f"{path}: the reply key must be RSA or EC P-256")


def key_id(public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    jwk: dict[str, Any] = (
        ECAlgorithm.to_jwk(public, as_dict=True)
        if isinstance(public, ec.EllipticCurvePublicKey)
        else RSAAlgorithm.to_jwk(public, as_dict=True)
    )
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode().rstrip("=")


def one_line(text: str) -> str:
    """`text` as one printable line of bounded length."""
    line = _NOT_PRINTABLE.sub(" ", text).strip()
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 3] + "..."


class ReplySigner:
    """Signs this service's replies with its reply key (read once, at start-up)."""

    def __init__(
        self, key_file: Path, *, service_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ReplyKeyInvalid(
                f"{key_file}: not a readable unencrypted PEM private key ({type(exc).__name__})"
            ) from None
        self._key, self._algorithm = _signing_key(key, key_file)
        self._kid = key_id(self._key.public_key())
        self._issuer = service_name
        self._clock = clock

    @property
    def algorithm(self) -> str:
        """`RS256` or `ES256`."""
        return self._algorithm

    @property
    def kid(self) -> str:
        """The `kid` its replies carry."""
        return self._kid

    def sign(
        self,
        reply_type: ReplyType,
        *,
        command_id: str,
        attempt: int,
        tenant_id: str,
        version: str | None = None,
        retryable: bool | None = None,
        reason: str | None = None,
    ) -> bytes:
        """The reply as the ASCII bytes of a compact JWS."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": PLATFORM_AUDIENCE,
            "iat": now,
            "exp": now + REPLY_TTL_SECONDS,
            "jti": secrets.token_hex(16),
            "type": str(reply_type),
            "commandId": command_id,
            "attempt": attempt,
            "tenantId": tenant_id,
        }
        if reply_type is ReplyType.MIGRATED:
            claims["version"] = version
        elif reply_type in (ReplyType.MIGRATION_FAILED, ReplyType.TEARDOWN_FAILED):
            claims["retryable"] = bool(retryable)
            claims["reason"] = one_line(reason or "")
        return jwt.encode(
            claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid}
        ).encode("ascii")
