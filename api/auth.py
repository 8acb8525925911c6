"""Bearer-token authentication: verify an operator's JWT, then read who it is and what it may do.

The identity provider's public keys come either from its JWKS URL (`PLATFORM_AUTH_JWKS_URL`;
the key set is cached and fetched again when a token names an unknown `kid`, so a key rotation
needs no restart) or, for development, from one PEM file (`PLATFORM_AUTH_PUBLIC_KEY_FILE`, what
`make dev` sets up). Only the asymmetric algorithms of `PLATFORM_AUTH_ALGORITHMS` are accepted,
and each key verifies only with its own algorithm, so `alg: none`, HMAC tokens and algorithm
confusion are refused (RFC 8725 section 3.1). Audience, issuer and expiry are always checked.

A verified token is remembered, by its sha256, until its own `exp` (never past it, and never
longer than `remember_for`, the key set's lifespan, so a key the provider withdrew stops
verifying as soon as it would without the memory), in an LRU of `remembered_tokens` entries:
a service presenting the same token on every read costs one signature check, not one per
request. Only verification is remembered: the console still asks PostgreSQL on every page
whether the token's session was signed out (`api.console.session.was_signed_out`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import jwt

from api.errors import ServiceUnavailable, Unauthorized
from infra.security.keys import PublicKey, load_public_key, public_jwk
from tenancy.settings import Settings

_log = logging.getLogger("platform.api.auth")

READ_SCOPE = "tenants:read"
WRITE_SCOPE = "tenants:write"
# Deleting and restoring tenants: operators may hold write without it.
DELETE_SCOPE = "tenants:delete"
# Fleet rollouts: start, pause, resume, cancel, retry (write) and watch (read).
ROLLOUTS_WRITE_SCOPE = "rollouts:write"
ROLLOUTS_READ_SCOPE = "rollouts:read"
# Storage servers: cordon and uncordon (reading them needs tenants:read).
SERVERS_WRITE_SCOPE = "servers:write"
# The tenant directory for other services: tenants' locations, and nothing else.
DIRECTORY_SCOPE = "directory:read"
# Every scope an operation checks.
ALL_SCOPES = (
    READ_SCOPE,
    WRITE_SCOPE,
    DELETE_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    SERVERS_WRITE_SCOPE,
    DIRECTORY_SCOPE,
)
# Clocks of the identity provider and this host drift a little; tokens live for minutes or hours.
DEFAULT_LEEWAY = timedelta(seconds=30)
_REQUIRED_CLAIMS = ("exp", "iat", "sub")
MAX_SUBJECT_LENGTH = 200
# The JWKS key set's lifespan (JwksKeys): a remembered token outlives its key by no more.
DEFAULT_REMEMBER_FOR = timedelta(seconds=300)
# Distinct tokens in use at once: services and operators, a few hundred bytes each remembered.
DEFAULT_REMEMBERED_TOKENS = 4096


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and the scopes it grants."""

    subject: str
    scopes: frozenset[str]


def scopes_from(claims: Mapping[str, Any]) -> frozenset[str]:
    """The granted scopes: OAuth's space-separated `scope` (RFC 8693, RFC 9068) and `scp`
    (a list, or a string as some providers send it). Anything else grants nothing."""
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(item for item in value if isinstance(item, str) and item)
    return frozenset(scopes)


class KeySource(Protocol):
    """Where the key that verifies a token comes from."""

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key for the token's `kid` header, bound to its one algorithm."""
        ...


class StaticKey:
    """One public key from a PEM file: the development identity provider's."""

    def __init__(self, key: PublicKey) -> None:
        self._jwk = jwt.PyJWK(public_jwk(key))

    @property
    def algorithm(self) -> str:
        """The only algorithm this key verifies."""
        return self._jwk.algorithm_name

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key, whatever `kid` the token names: there is only one."""
        return self._jwk


class JwksKeys:
    """An identity provider's key set, fetched over HTTP in a worker thread and cached.

    Only the key *set* is cached, for `lifespan` seconds: PyJWKClient's per-`kid` cache never
    expires, so a key the provider withdrew would stay trusted until a restart. An unknown
    `kid` fetches the set again at most once per `refresh_cooldown`, so a flood of tokens with
    invented key ids cannot hammer the provider.
    """

    def __init__(
        self,
        url: str,
        *,
        lifespan: float = 300,
        refresh_cooldown: float = 30,
        timeout: float = 5,
    ) -> None:
        self._client = jwt.PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=lifespan,
            cooldown_duration=refresh_cooldown,
            timeout=timeout,
        )

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The provider's key named `kid`; 401 if it publishes none, 503 if it cannot be read."""
        if kid is None:
            raise Unauthorized("the token has no kid header naming its signing key")
        try:
            return await asyncio.to_thread(self._client.get_signing_key, kid)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as exc:
            _log.warning("cannot read the identity provider's keys: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "the identity provider's keys cannot be read; try again later"
            ) from None
        except jwt.PyJWKClientError:
            raise Unauthorized(
                "the token's signing key is not published by the identity provider"
            ) from None


def _describe(error: jwt.PyJWTError) -> str:
    # Fixed wording, never PyJWT's message: some of those quote parts of the token.
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is meant for another audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token comes from an issuer this service does not trust"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the {error.claim} claim"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "the token's algorithm does not match its signing key"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(error, jwt.DecodeError):
        return "the token is malformed"
    return "the token is invalid"


class TokenVerifier:
    """Checks bearer tokens: signature, algorithm, audience, issuer, expiry, subject."""

    def __init__(
        self,
        keys: KeySource,
        *,
        audience: str,
        issuer: str | None,
        algorithms: Sequence[str],
        leeway: timedelta = DEFAULT_LEEWAY,
        remember_for: timedelta = DEFAULT_REMEMBER_FOR,
        remembered_tokens: int = DEFAULT_REMEMBERED_TOKENS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._algorithms = tuple(algorithms)
        self._leeway = leeway
        self._required = [*_REQUIRED_CLAIMS, "aud"] + (["iss"] if issuer else [])
        self._remember_for = remember_for.total_seconds()
        self._capacity = remembered_tokens
        self._clock = clock
        # sha256 of the token -> (its principal, the time it must be verified again by).
        self._remembered: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    @property
    def leeway(self) -> timedelta:
        """How long past its `exp` a token is still taken (clock skew)."""
        return self._leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe; raises if authentication is not configured."""
        keys: KeySource
        if settings.auth_jwks_url is not None:
            keys = JwksKeys(str(settings.auth_jwks_url))
            _log.info("verifying bearer tokens with the keys at %s", settings.auth_jwks_url)
        elif settings.auth_public_key_file is not None:
            static = StaticKey(load_public_key(settings.auth_public_key_file))
            if static.algorithm not in settings.auth_algorithms:
                raise RuntimeError(
                    f"PLATFORM_AUTH_PUBLIC_KEY_FILE holds an {static.algorithm} key, but "
                    f"PLATFORM_AUTH_ALGORITHMS allows only {', '.join(settings.auth_algorithms)}"
                )
            keys = static
            _log.info("verifying bearer tokens with %s", settings.auth_public_key_file)
        else:
            raise RuntimeError(
                "API authentication is not configured: set PLATFORM_AUTH_JWKS_URL to your "
                "identity provider's JWKS URL, or PLATFORM_AUTH_PUBLIC_KEY_FILE to a PEM public "
                "key (`make dev` sets a development one)"
            )
        return cls(
            keys,
            audience=settings.auth_audience,
            issuer=settings.auth_issuer,
            algorithms=settings.auth_algorithms,
        )

    async def verify(self, token: str) -> Principal:
        """The principal `token` speaks for, or Unauthorized saying what is wrong with it."""
        digest = hashlib.sha256(token.encode(errors="surrogatepass")).digest()
        now = self._clock()
        remembered = self._remembered.get(digest)
        if remembered is not None:
            principal, until = remembered
            if now < until:
                self._remembered.move_to_end(digest)
                return principal
            del self._remembered[digest]
        principal, expires = await self._verify(token)
        until = min(expires, now + self._remember_for)
        if until > now:
            self._remembered[digest] = (principal, until)
            while len(self._remembered) > self._capacity:
                self._remembered.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's `exp`, checked in full."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._reject("the token is malformed") from None
        # Refused before any key lookup: a token in a foreign algorithm costs no JWKS fetch.
        if header.get("alg") not in self._algorithms:
            raise self._reject(
                f"the token's algorithm is not accepted; use one of {', '.join(self._algorithms)}"
            )
        key = await self._keys.key_for(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.PyJWTError as exc:
            raise self._reject(_describe(exc)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise self._reject("the token's sub claim is empty")
        # The subject is written to the audit trail as created_by and actor: PostgreSQL
        # refuses a NUL in text, and control characters would reach every log and report.
        if len(subject) > MAX_SUBJECT_LENGTH:
            raise self._reject(f"the token's sub claim is longer than {MAX_SUBJECT_LENGTH}")
        if not subject.isprintable():
            raise self._reject("the token's sub claim holds non-printable characters")
        return Principal(subject=subject, scopes=scopes_from(claims)), float(claims["exp"])

    @staticmethod
    def _reject(description: str) -> Unauthorized:
        _log.info("rejected a bearer token: %s", description)
        return Unauthorized(description)
