"""Verifying that a call comes from the platform: its per-call bearer JWT (RFC 8725 practice).

A token passes when, in this order: the `Authorization` header is `Bearer <token>`; the header's
`alg` is ES256 or RS256 and matches the key its `kid` selects; the signature verifies; `iss` is
the platform, `aud` is this service's name, `exp`, `iat` and `jti` are present, `exp` has not
passed, `iat`/`nbf` are not in the future (all with a short leeway); `tenantId` is the tenant in
the path; and its `jti` has not been seen before. Anything else is a 401 whose detail names the
first check that failed. Tokens are never logged or echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from examples.downstream_service.errors import TokenExpired, TokenReplayed, Unauthenticated
from examples.downstream_service.keys import (
    ALLOWED_ALGORITHMS,
    JwksKeys,
    KeyFile,
    PlatformKeys,
    UnknownKey,
)
from examples.downstream_service.replay import SeenTokenIds
from examples.downstream_service.settings import DownstreamSettings

_log = logging.getLogger(__name__)

REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti", "tenantId")
# Registered JWS names (RFC 7518 section 3.1, plus EdDSA): safe to repeat in a detail.
_KNOWN_ALGORITHMS = frozenset(
    {"none", "EdDSA"}
    | {f"{family}{bits}" for family in ("HS", "RS", "ES", "PS") for bits in (256, 384, 512)}
)


@dataclass(frozen=True, slots=True)
class PlatformCall:
    """What a verified token says about the call."""

    tenant_id: str
    jti: str
    kid: str | None
    # Epoch seconds until which the jti is remembered (exp plus the leeway).
    remembered_until: float


class TokenVerifier:
    """Checks the platform's per-call tokens for one service. Thread-safe; may block on HTTP."""

    def __init__(
        self,
        keys: PlatformKeys,
        *,
        audience: str,
        issuer: str,
        leeway: timedelta,
        seen: SeenTokenIds,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway.total_seconds()
        self._seen = seen

    def verify(self, authorization: str | None, tenant_id: str) -> PlatformCall:
        """Verify the `Authorization` header of a call about `tenant_id`; Unauthenticated if not.

        The `jti` is recorded only when every other check passed, so a rejected token cannot
        use up the id of a genuine one.
        """
        token = self._bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise self._reject("malformed token (not a JWS compact serialization)") from None
        except jwt.InvalidTokenError:
            raise self._reject("malformed token header (kid or crit)") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise self._reject("token header has no alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            shown = f" {algorithm}" if algorithm in _KNOWN_ALGORITHMS else ""
            raise self._reject(f"token algorithm{shown} not allowed; expected ES256 or RS256")
        # PyJWT has checked that a kid, if present, is a string.
        kid: str | None = header.get("kid")
        try:
            key = self._keys.key_for(kid)
        except UnknownKey as exc:
            raise self._reject(str(exc)) from None
        if key.algorithm_name != algorithm:
            raise self._reject(f"token algorithm {algorithm} does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired", realm=self._audience) from None
        except jwt.PyJWTError as exc:
            raise self._reject(self._explain(exc)) from None
        if claims["tenantId"] != tenant_id:
            raise self._reject("token tenantId does not match the tenant in the path")
        jti = claims["jti"]
        if not jti:
            raise self._reject("token jti is empty")
        # Remembered as long as the token would pass the exp check, leeway included.
        remembered_until = float(claims["exp"]) + self._leeway
        if not self._seen.first_use(jti, remembered_until):
            raise TokenReplayed("token already used (jti replay)", realm=self._audience, jti=jti)
        return PlatformCall(
            tenant_id=tenant_id, jti=jti, kid=kid, remembered_until=remembered_until
        )

    def _bearer_token(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token", realm=self._audience, token_given=False)
        return token.strip()

    def _explain(self, exc: jwt.PyJWTError) -> str:
        """One short line naming what was wrong; PyJWT's own messages are not written for this."""
        match exc:
            case jwt.InvalidSignatureError():
                return "token signature does not verify with the platform key"
            case jwt.ImmatureSignatureError():
                return "token not valid yet (iat or nbf in the future)"
            case jwt.InvalidAudienceError():
                return f"token audience does not match {self._audience}"
            case jwt.InvalidIssuerError():
                return f"token issuer is not {self._issuer}"
            case jwt.MissingRequiredClaimError():
                return f"token lacks the {exc.claim} claim"
            case jwt.InvalidIssuedAtError():
                return "token iat is not a number"
            case jwt.exceptions.InvalidJTIError():
                return "token jti is not a string"
            case jwt.DecodeError():
                return "malformed token"
            case _:
                return "invalid token"

    def _reject(self, detail: str) -> Unauthenticated:
        return Unauthenticated(detail, realm=self._audience)


def build_verifier(settings: DownstreamSettings, seen: SeenTokenIds) -> TokenVerifier:
    """The verifier `settings` describe, remembering token ids in `seen`; AuthNotConfigured or
    ValueError if they cannot work.

    Reads the key file, if that is the source; a JWKS is fetched only on the first call.
    """
    source = settings.require_key_source()
    keys: PlatformKeys
    if isinstance(source, Path):
        keys = KeyFile(source)
    else:
        keys = JwksKeys(
            str(source),
            cache_ttl=settings.jwks_cache_ttl,
            refresh_cooldown=settings.jwks_refresh_cooldown,
            timeout=settings.jwks_timeout,
        )
    return TokenVerifier(
        keys,
        audience=settings.service_name,
        issuer=settings.platform_issuer,
        leeway=settings.token_leeway,
        seen=seen,
    )


class PlatformCallRoute(APIRoute):
    """A route only the platform may call: the token is verified before anything else.

    Checked here rather than in a dependency because FastAPI reads and parses the body before
    it resolves dependencies: an unauthenticated caller would otherwise learn whether its JSON
    parses, and a missing Idempotency-Key would be reported before the missing token. Every
    route of this class has a `{tenant_id}` path parameter the token's `tenantId` must equal.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The normal handler, behind the token check."""
        handler = super().get_route_handler()

        async def verified(request: Request) -> Response:
            verifier: TokenVerifier = request.app.state.verifier
            try:
                call = await run_in_threadpool(
                    verifier.verify,
                    request.headers.get("Authorization"),
                    str(request.path_params["tenant_id"]),
                )
            except Unauthenticated as exc:
                _log.warning("rejected call to %s: %s", request.url.path, exc.detail)
                raise
            request.state.platform_call = call
            return await handler(request)

        return verified
