"""One logging pipeline for the API, the worker and every library they use.

structlog renders both its own events and stdlib records (uvicorn, temporalio, httpx, yoyo,
psycopg): JSON lines in production, readable lines in `make dev`. Context bound with
`structlog.contextvars` (tenant, workflow, activity) joins every line logged under it, and
every line passes `redact` last, so a DSN password, a bearer token, a JWT or a PEM key that
reaches a message, a bound value or a traceback is masked before it is written. Every string
is then made printable (`printable`): a request path or token subject with an escape
sequence, a BEL or a NUL is written as `\x1b`, `\x07`, `\x00`, so it can neither drive the
terminal that shows the console log nor forge a line.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity, workflow

from tenancy.settings import Settings

MASK = "***"

# Each pattern runs in time linear in the text, whatever it holds: `re` backtracks, so a
# pattern that may start anywhere inside a run of its characters and then scan to the run's end
# costs the square of the run (a URL's 8,000 letters took 3.6 s). A match here starts only where
# such a run starts (a lookbehind), the first candidate in the run is kept (an atomic group:
# when it fails every later one would fail the same way), and no quantifier gives back what it
# took (possessive `*+`, `++`) when giving back cannot help.
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*+-----|.*\Z)", re.DOTALL
)
_SCHEME_CHAR = r"[a-zA-Z0-9+.-]"
_URL_PASSWORD = re.compile(
    rf"(?P<head>(?<!{_SCHEME_CHAR})(?>{_SCHEME_CHAR}*?\b[a-zA-Z]){_SCHEME_CHAR}*+"
    r"://[^:/@\s]*+:)[^@/\s]++@"
)
_JWT = re.compile(r"(?<![\w-])(?P<before>(?>[\w-]*?\b(?=eyJ)))eyJ[\w-]*+\.eyJ[\w-]*+\.[\w-]*+")
_BEARER = re.compile(r"(?i)\b(bearer\s++)[\w.~+/=-]+")
_SECRET_WORD = r"(?:password|passwd|secret|token|api[_-]?key|authorization)"
_SECRET_PAIR = re.compile(
    rf"""(?ix)
    (?<![\w-])
    (?P<key>(?=[\w-]*?{_SECRET_WORD})[\w-]++['"]?\s*+[=:]\s*+)
    (?P<value>(?:(?:bearer|basic|digest)\s++)?(?:"[^"]*+"|'[^']*+'|[^\s&,;'"}})\]]++))
    """
)
_SECRET_KEY = re.compile(rf"(?i)(?=[\w-]*+\n?\Z)[\w-]*?{_SECRET_WORD}")
# Values whose line breaks are part of the text (a traceback, a stack), not an injection.
_MULTILINE_KEYS = frozenset({"exception", "stack"})
_KEPT_IN_BLOCKS = frozenset("\n\t")


# Values JSON and the console render as they are; anything else is rendered with repr()
# and must be redacted as text (a Settings object's repr holds its DSNs).
_PLAIN = (int, float, bool, type(None))

# Keys of the `extra` dicts that temporalio's workflow and activity loggers attach to each
# record, renamed to the names our own context uses.
_TEMPORAL_EXTRAS = ("temporal_workflow", "temporal_activity")
_TEMPORAL_RENAMES = {"workflow_run_id": "run_id", "activity_type": "activity"}
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    """`text` with passwords in URLs, bearer tokens, JWTs, PEM private keys and
    `password=`-style values replaced by `***`."""
    text = _PEM.sub(f"[private key {MASK}]", text)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _JWT.sub(rf"\g<before>{MASK}", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    return _SECRET_PAIR.sub(rf"\g<key>{MASK}", text)


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def printable(text: str, *, multiline: bool = False) -> str:
    """`text` with every character `str.isprintable()` refuses as its Python escape
    (`\x1b`, `\x00`, `\u2028`); line breaks and tabs stay when `multiline` (a traceback)."""
    if text.isprintable():
        return text
    kept = _KEPT_IN_BLOCKS if multiline else frozenset()
    return "".join(c if c.isprintable() or c in kept else _escape(c) for c in text)


# Masking is what a line costs most, and a line repeats most of its strings (the event, the
# logger, the level, the route, a tenant id; the API writes one per request): a short string is
# masked once and the result remembered. Longer text (a traceback, a payload) is masked anew.
_REMEMBERED_TEXT = 256
_REMEMBERED_STRINGS = 4096


@functools.lru_cache(maxsize=_REMEMBERED_STRINGS)
def _masked_short(text: str, multiline: bool) -> str:
    return printable(redact(text), multiline=multiline)


# Text of hex digits and a timestamp's signs only: no pattern above can match it (each needs a
# letter past `f` or a `/`, `=`, `@` or space), and it is printable. Every line has two such
# values no other line repeats (its timestamp, its request id): passed as they are, not masked.
_INERT = re.compile(r"[0-9a-fA-FTZ:.+-]*+")


def masked(text: str, *, multiline: bool = False) -> str:
    """`text` as a log line may show it: `redact`ed, then `printable`."""
    if _INERT.fullmatch(text):
        return text
    if len(text) <= _REMEMBERED_TEXT:
        return _masked_short(text, multiline)
    return printable(redact(text), multiline=multiline)


@functools.lru_cache(maxsize=_REMEMBERED_STRINGS)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.match(key) is not None


def _redact_value(key: object, value: object) -> object:
    if isinstance(key, str) and _secret_key(key) and not isinstance(value, bool | None):
        return MASK
    if isinstance(value, str):
        return masked(value, multiline=key in _MULTILINE_KEYS)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, v) for v in value]
    return masked(repr(value))


def redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `redact` the event and every value, at any depth, and make every
    key and string `printable`."""
    return {
        printable(key) if isinstance(key, str) else key: _redact_value(key, value)
        for key, value in event_dict.items()
    }


def _temporal_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    for extra in _TEMPORAL_EXTRAS:
        details = getattr(record, extra, None)
        if isinstance(details, Mapping):
            for key, value in details.items():
                name = str(key)
                event_dict.setdefault(_TEMPORAL_RENAMES.get(name, name), value)
    return event_dict


class _PlatformHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs, so a second call replaces it."""


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one redacting pipeline to `stream`
    (stderr by default), as JSON lines or console lines per `settings.log_format`.

    Safe to call again: the previous handler is replaced, never duplicated.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    target = stream if stream is not None else sys.stderr
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=target.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _temporal_context],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text here so that redaction sees them before rendering.
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = _PlatformHandler(target)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PlatformHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # uvicorn installs its own handlers (and stops propagation) before it imports the app.
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # Each request is logged once, by the API's middleware (`api.metrics`: route, status,
    # duration, tenant); uvicorn's access line would log it twice.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The workflow/activity details arrive as fields; appending them to the text repeats them.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later configure_logging (tests, a reload) must reach existing loggers.
        cache_logger_on_first_use=False,
    )
