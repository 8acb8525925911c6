"""What every console page shares: templates, the signed-in session, forms with CSRF checks,
notices carried across a redirect, and the response headers of a page that shows tenant data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, unquote

from fastapi import Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.auth import (
    DELETE_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    SERVERS_WRITE_SCOPE,
    WRITE_SCOPE,
    TokenVerifier,
)
from api.console.session import (
    CSRF_FIELD,
    Session,
    clear_cookie,
    csrf_matches,
    csrf_token_for,
    presented_token,
    set_cookie,
    was_signed_out,
)
from api.errors import Unauthorized
from tenancy.settings import Settings
from tenancy.text import escape_unprintable

CONSOLE = "/console"
NOTICE_COOKIE = "platform_console_notice"
# Console forms are a few short fields; anything larger is refused unread.
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64
# Pages show live tenant data: never cached, never framed, scripts and styles only from here.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
SCOPES = {
    "read": READ_SCOPE,
    "write": WRITE_SCOPE,
    "delete": DELETE_SCOPE,
    "rollouts_read": ROLLOUTS_READ_SCOPE,
    "rollouts_write": ROLLOUTS_WRITE_SCOPE,
    "servers_write": SERVERS_WRITE_SCOPE,
}

# HTML renders these as spaces; a form shown again keeps the line breaks an operator typed.
_HTML_WHITESPACE = "\t\n\r"


def _printable(value: Any) -> Any:
    """Text with every character that is not printable shown as its escape (`\\u202e`), as
    platformctl shows it: a bidi override or a C1 control stored before the API refused them
    must not reorder or hide what a page shows. Every `{{ }}` goes through it (the
    environment's `finalize`), before HTML autoescape."""
    if isinstance(value, Markup):
        return Markup(escape_unprintable(value, keep=_HTML_WHITESPACE))
    if isinstance(value, str):
        return escape_unprintable(value, keep=_HTML_WHITESPACE)
    return value


_templates = Environment(
    loader=FileSystemLoader(str(files("api.console") / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_printable,
)


def _when(value: Any) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


_templates.filters["when"] = _when
_templates.filters["printable"] = _printable
_templates.globals["scopes"] = SCOPES


class SignInRequired(Exception):
    """No session, or one whose token no longer verifies: the page sends the browser to sign in
    (a live fragment gets 401 and its script does it)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in")
        self.reason = reason


class CsrfRefused(Exception):
    """A form that changes something came without this session's CSRF token."""


async def current_session(request: Request) -> Session:
    """The signed-in operator, verified exactly as the API verifies bearer tokens."""
    presented = presented_token(request)
    if presented is None:
        raise SignInRequired()
    token, from_proxy = presented
    verifier: TokenVerifier = request.state.verifier
    try:
        principal = await verifier.verify(token)
    except Unauthorized as exc:
        raise SignInRequired(exc.detail) from None
    if await was_signed_out(request, token):
        raise SignInRequired("the session was signed out")
    return Session(token, principal, csrf_token_for(token), from_proxy)


Signed = Annotated[Session, Depends(current_session)]


def settings_of(request: Request) -> Settings:
    """The app's settings (for the Temporal Web UI's address, among others)."""
    settings: Settings = request.state.settings
    return settings


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body, at most `MAX_FORM_BYTES`; a field given twice keeps its last."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise CsrfRefused()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise CsrfRefused()
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise CsrfRefused() from None
    return dict(pairs)


def _same_origin(request: Request) -> bool:
    """A browser's own word that the form was posted from another site is final."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    # Host only: behind a TLS-terminating proxy the app may see http while the browser says https.
    return origin.rstrip("/").partition("://")[2] == request.url.netloc


async def checked_form(request: Request, session: Session) -> dict[str, str]:
    """The posted form, after checking its CSRF token and origin; CsrfRefused otherwise."""
    form = await read_form(request)
    if not _same_origin(request) or not csrf_matches(session.token, form.get(CSRF_FIELD)):
        raise CsrfRefused()
    return form


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page (or a fragment, for names starting with `_`) with the console's headers."""
    raw_notice = request.cookies.get(NOTICE_COOKIE)
    notice = unquote(raw_notice) if raw_notice else None
    html = _templates.get_template(template).render(
        request=request,
        session=session,
        csrf_field=CSRF_FIELD,
        notice=notice if not template.startswith("_") else None,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
    if notice and not template.startswith("_"):
        clear_cookie(response, request, NOTICE_COOKIE)
    return response


def redirect(request: Request, url: str, notice: str | None = None) -> Response:
    """See-other to `url` (after a form), carrying a one-time notice to the page it shows."""
    response = RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)
    if notice:
        # Short-lived and HttpOnly: only this server writes it, and the next page shows it once.
        set_cookie(response, request, NOTICE_COOKIE, quote(notice[:300]), max_age=60)
    return response


def sign_in_url(next_path: str) -> str:
    """The sign-in page, returning to `next_path` (a console path) afterwards."""
    return f"{CONSOLE}/sign-in?next={quote(next_path, safe='/')}"


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path only, never another site."""
    if not value or "\\" in value or any(ord(char) < 0x21 for char in value):
        return CONSOLE
    if value == CONSOLE or value.startswith((f"{CONSOLE}/", f"{CONSOLE}?")):
        return value
    return CONSOLE


@dataclass(frozen=True)
class Pager:
    """Paging links of a list: the query of the next page, keeping every filter."""

    next_query: str | None


def query_with(params: Mapping[str, Any], **changes: Any) -> str:
    """`params` with `changes` as a query string, empty values left out."""
    merged = {**params, **changes}
    kept = [(name, str(value)) for name, value in merged.items() if value not in (None, "")]
    return "&".join(f"{quote(name)}={quote(value)}" for name, value in kept)
