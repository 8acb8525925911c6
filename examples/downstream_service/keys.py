"""Where the platform's public keys come from: one PEM file, or the platform's JWK Set.

Both answer `key_for(kid)` with a `jwt.PyJWK`, whose `algorithm_name` is the only algorithm
a token verified with it may use. Lookups may block on HTTP: call them off the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from examples.downstream_service.errors import KeysUnavailable

_log = logging.getLogger(__name__)

# RFC 8725: an explicit allow-list of asymmetric algorithms. `none` and the HMAC family are
# never accepted: with HS256 anyone holding the *public* key could sign.
ALLOWED_ALGORITHMS = frozenset({"ES256", "RS256"})


class UnknownKey(Exception):
    """The token names a key the platform does not publish (or no key at all)."""


class PlatformKeys(Protocol):
    """A source of the platform's verification keys."""

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key a token with header `kid` must verify with; UnknownKey if there is none."""
        ...


def _load_public_key(path: Path) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    data = path.read_bytes()
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        # A private key file is accepted for convenience (e.g. the platform's dev key); the
        # private half is dropped at once.
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path} holds no PEM public or unencrypted private key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"{path}: only EC P-256 and RSA keys are supported")
    return key


class KeyFile:
    """One public key from a PEM file: every token must verify with it, whatever its `kid`."""

    def __init__(self, path: Path) -> None:
        public = _load_public_key(path)
        jwk: dict[str, Any] = (
            ECAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, ec.EllipticCurvePublicKey)
            else RSAAlgorithm.to_jwk(public, as_dict=True)
        )
        self._key = jwt.PyJWK(jwk)
        if self._key.algorithm_name not in ALLOWED_ALGORITHMS:
            raise ValueError(
                f"{path}: a {self._key.algorithm_name} key; the platform signs with ES256 "
                "(EC P-256) or RS256 (RSA)"
            )

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The configured key."""
        return self._key


class JwksKeys:
    """The platform's JWK Set, fetched on first use (the platform may start later) and cached.

    A `kid` missing from the cached set forces one refresh, at most once per cooldown: a key the
    platform has just rotated in is found at once, a dropped one is rejected. A `kid` still
    unknown while the cooldown holds is rejected too (401): anyone can send a made-up `kid`,
    and a 5xx would be theirs to cause at will. The platform publishes a new key before it
    signs with it, so its own tokens never meet this. Only a refresh that was attempted and
    failed answers 503 (KeysUnavailable).
    """

    def __init__(
        self, url: str, *, cache_ttl: timedelta, refresh_cooldown: timedelta, timeout: timedelta
    ) -> None:
        self._url = url
        self._client = jwt.PyJWKClient(
            url,
            cache_keys=False,  # its per-kid cache never expires: a dropped key would stay valid
            cache_jwk_set=True,
            lifespan=cache_ttl.total_seconds(),
            timeout=timeout.total_seconds(),
        )
        self._cooldown = refresh_cooldown.total_seconds()
        self._refreshed_at: float | None = None
        # One lookup at a time: concurrent calls wait for one fetch instead of each making one.
        self._lock = threading.Lock()

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The published key with id `kid`."""
        if not kid:
            raise UnknownKey("token header has no kid")
        with self._lock:
            key = self._find(kid, refresh=False)
            if key is not None:
                return key
            now = time.monotonic()
            if self._refreshed_at is not None and now - self._refreshed_at < self._cooldown:
                raise UnknownKey(
                    "token signed with a key the platform does not publish (JWKS refreshed "
                    f"less than {self._cooldown:g}s ago)"
                )
            self._refreshed_at = now
            key = self._find(kid, refresh=True)
        if key is None:
            raise UnknownKey("token signed with a key the platform does not publish")
        return key

    def _find(self, kid: str, *, refresh: bool) -> jwt.PyJWK | None:
        try:
            keys = self._client.get_signing_keys(refresh=refresh)
        # Connection errors, HTTP errors, a body that is not a JWK Set (ValueError: not JSON).
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:
            _log.warning("cannot fetch the platform JWKS from %s: %s", self._url, exc)
            raise KeysUnavailable(f"cannot fetch the platform JWKS from {self._url}") from None
        return next((key for key in keys if key.key_id == kid), None)
