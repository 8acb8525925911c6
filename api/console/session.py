"""The console's session: a verified bearer token in a cookie, and CSRF tokens bound to it.

The token an operator pastes is verified exactly as the API verifies it (`TokenVerifier`) and
kept in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over HTTPS), so page scripts never see
it and other sites' pages never send it. The cookie lives no longer than the token.

Signing out ends the session at once on every API process: the token's sha256 is remembered in
PostgreSQL until the token expires (`ConsoleSignOuts`), and the console refuses that token from
then on, however it is presented and even if it is pasted again. The token stays valid for the
API: it is the operator's own credential from the identity provider (platformctl may hold it
too), which only the provider or its expiry revokes.

CSRF: every form that changes something carries `csrf_token`, an HMAC of a fixed label keyed
with the session's bearer token. Only the server (which reads the HttpOnly cookie) and pages it
rendered know it, so a forged form from elsewhere cannot carry it, and no server-side secret or
session store is needed for it: any API replica checks it. The sign-in form itself has no
session yet; it is protected by a random double-submit cookie, so no other site can sign an
operator in as someone else. Both checks compare in constant time.

Behind an identity-aware proxy the request may carry `Authorization: Bearer ...` instead of the
cookie (the proxy signs the operator in and injects their token); the console uses it the same
way, with the same CSRF binding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from fastapi import Request
from starlette.responses import Response

from api.auth import Principal, TokenVerifier
from infra.db.console_sessions import ConsoleSignOuts

SESSION_COOKIE = "platform_console_session"
SIGN_IN_COOKIE = "platform_console_sign_in"
CSRF_FIELD = "csrf_token"
CONSOLE_PATH = "/console"
_CSRF_LABEL = b"platform-service console csrf v1"
# A bearer token is a JWT of a few hundred bytes; a longer paste is refused before verification.
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Session:
    """A signed-in operator: their token, who it speaks for, and the form CSRF token."""

    token: str
    principal: Principal
    csrf_token: str
    # Whether the token came from the proxy's Authorization header (then sign-out is the proxy's).
    from_proxy: bool = False

    def can(self, scope: str) -> bool:
        """Whether the token grants `scope` (to show or hide the buttons that need it)."""
        return scope in self.principal.scopes


def csrf_token_for(token: str) -> str:
    """The CSRF token of the session holding `token`."""
    digest = hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_matches(token: str, submitted: str | None) -> bool:
    """Whether `submitted` is this session's CSRF token."""
    return submitted is not None and hmac.compare_digest(
        csrf_token_for(token).encode(), submitted.encode()
    )


def new_sign_in_nonce() -> str:
    """A fresh value for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(32)


def sign_in_nonce_matches(request: Request, submitted: str | None) -> bool:
    """Whether the sign-in form's hidden field repeats the cookie set with the form."""
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (uvicorn's --proxy-headers sets the scheme
    from X-Forwarded-Proto behind a trusted proxy)."""
    return request.url.scheme == "https"


def token_lifetime(token: str, now: datetime | None = None) -> int:
    """Seconds until the (already verified) token expires; the cookie lives no longer."""
    claims = jwt.decode(token, options={"verify_signature": False})
    expires = int(claims.get("exp", 0))
    current = (now or datetime.now(UTC)).timestamp()
    return max(0, int(expires - current))


def token_digest(token: str) -> bytes:
    """The sha256 a signed-out session is remembered by: the token itself is never stored."""
    return hashlib.sha256(token.encode()).digest()


def token_expiry(token: str) -> datetime:
    """When the (already verified) token expires: a sign-out is remembered until then."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return datetime.fromtimestamp(int(claims.get("exp", 0)), UTC)


async def end_session(request: Request, token: str) -> None:
    """Sign the session of `token` out on every API process, until the token expires (and
    the verifier's leeway past it, while it still takes the token)."""
    sign_outs: ConsoleSignOuts = request.state.console_sign_outs
    verifier: TokenVerifier = request.state.verifier
    await sign_outs.remember(token_digest(token), token_expiry(token) + verifier.leeway)


async def was_signed_out(request: Request, token: str) -> bool:
    """Whether a console session of `token` was signed out (it cannot sign in again)."""
    sign_outs: ConsoleSignOuts = request.state.console_sign_outs
    return await sign_outs.signed_out(token_digest(token))


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Secure over HTTPS, for /console only."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=CONSOLE_PATH,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    """Expire a console cookie set by `set_cookie`."""
    response.delete_cookie(
        name, path=CONSOLE_PATH, secure=is_https(request), httponly=True, samesite="strict"
    )


def presented_token(request: Request) -> tuple[str, bool] | None:
    """The bearer token of this request and whether a proxy sent it: the Authorization
    header wins over the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), True
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, False
    return None
