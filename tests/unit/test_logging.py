"""Structured logs: JSON or console lines, one pipeline for structlog and stdlib loggers, and
no secret (DSN password, bearer token, JWT, PEM key, `password=` value) ever written."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from temporalio import activity, workflow

from infra.telemetry.logging import configure_logging, masked, printable, redact
from tenancy.settings import Settings

JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJwbGF0Zm9ybSIsInRlbmFudElkIjoiYWNtZSJ9"
    ".MEUCIQDx-7_signature_part"
)
PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBsecretsecretsecretsecretsecretsecretsecretoAoGCCqGSM49\n"
    "AwEHoUQDQgAEsecretsecret==\n"
    "-----END EC PRIVATE KEY-----"
)
SECRETS = ("S3cretPw", "opaque-token-123", JWT[:20], "MHcCAQEEIB", "PRIVATE KEY", "hunter2")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back what configure_logging changes, so other tests see logging as they found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    structlog_config = structlog.get_config()
    on_message = (
        workflow.logger.workflow_info_on_message,
        activity.logger.activity_info_on_message,
    )
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (library_handlers, propagate, library_level) in libraries.items():
        logging.getLogger(name).handlers[:] = library_handlers
        logging.getLogger(name).propagate = propagate
        logging.getLogger(name).setLevel(library_level)
    structlog.configure(**structlog_config)
    workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = on_message
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def json_logs(restore_logging: None) -> Callable[[], list[dict[str, Any]]]:
    """Configure JSON logs into a buffer; the returned function parses what was written."""
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="DEBUG"), stream=stream)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    return lines


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {text!r}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "connecting to postgresql://postgres:S3cretPw@127.0.0.1:5432/platform",
            "connecting to postgresql://postgres:***@127.0.0.1:5432/platform",
        ),
        ("Authorization: Bearer opaque-token-123", "Authorization: ***"),
        ("sent bearer opaque-token-123 upstream", "sent bearer *** upstream"),
        (f"token {JWT} expired", "token *** expired"),
        (f"key: {PEM} loaded", "key: [private key ***] loaded"),
        (f"cut short: {PEM[:60]}", "cut short: [private key ***]"),
        ("host=db password=hunter2 user=app", "host=db password=*** user=app"),
        ("{'secret': 'hunter2', 'n': 1}", "{'secret': ***, 'n': 1}"),
        ("GET /x?api_key=hunter2&page=2", "GET /x?api_key=***&page=2"),
        ("PLATFORM_AUTH_TOKEN=hunter2", "PLATFORM_AUTH_TOKEN=***"),
    ],
)
def test_redact_masks_each_kind_of_secret(raw: str, expected: str) -> None:
    assert redact(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tenant acme is ACTIVE on BASIC tier",
        "POST http://127.0.0.1:8101/internal/tenants/acme/migrate 200",
        "jdbc:postgresql://127.0.0.1:5432/tenants?currentSchema=tenant_acme",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_json_lines_carry_level_logger_time_and_bound_context(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    structlog.contextvars.bind_contextvars(tenant_id="acme", workflow_id="tenant-provision-acme")
    structlog.stdlib.get_logger("platform.test").info("storage ready", mode="SCHEMA")

    (line,) = json_logs()
    assert line["event"] == "storage ready"
    assert line["level"] == "info"
    assert line["logger"] == "platform.test"
    assert line["timestamp"].endswith("Z")
    assert line["mode"] == "SCHEMA"
    assert line["tenant_id"] == "acme"
    assert line["workflow_id"] == "tenant-provision-acme"


def test_secrets_are_masked_in_messages_bound_values_and_exceptions(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    log = structlog.stdlib.get_logger("platform.test")
    structlog.contextvars.bind_contextvars(dsn="postgresql://postgres:S3cretPw@db/platform")
    log.info("calling with Bearer %s", "opaque-token-123", token=JWT, nested={"pem": PEM})
    try:
        raise RuntimeError(f"signing failed with {PEM} for password=hunter2")
    except RuntimeError:
        log.exception("could not sign")

    first, second = json_logs()
    assert first["event"] == "calling with Bearer ***"
    assert first["token"] == "***"
    assert first["nested"] == {"pem": "[private key ***]"}
    assert first["dsn"] == "postgresql://postgres:***@db/platform"
    assert "RuntimeError: signing failed with [private key ***]" in second["exception"]
    assert_no_secret(json.dumps([first, second]))


def test_third_party_stdlib_loggers_go_through_the_same_pipeline(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    structlog.contextvars.bind_contextvars(tenant_id="acme")
    logging.getLogger("httpx").info("HTTP Request: POST %s", "http://svc:S3cretPw@backend/migrate")
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        logging.getLogger("temporalio.activity").warning(
            "Completing activity as failed", exc_info=True
        )

    first, second = json_logs()
    assert first == {
        "event": "HTTP Request: POST http://svc:***@backend/migrate",
        "level": "info",
        "logger": "httpx",
        "tenant_id": "acme",
        "timestamp": first["timestamp"],
    }
    assert second["logger"] == "temporalio.activity"
    assert second["level"] == "warning"
    assert "ValueError: bad token ***" in second["exception"]
    assert_no_secret(json.dumps([first, second]))


def test_temporal_record_details_become_fields(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    logging.getLogger("temporalio.workflow").info(
        "tenant acme is ACTIVE",
        extra={"temporal_workflow": {"workflow_id": "tenant-provision-acme", "run_id": "r1"}},
    )
    logging.getLogger("temporalio.activity").info(
        "attempt",
        extra={"temporal_activity": {"activity_type": "migrate_service", "workflow_run_id": "r1"}},
    )

    workflow_line, activity_line = json_logs()
    assert workflow_line["workflow_id"] == "tenant-provision-acme"
    assert workflow_line["run_id"] == "r1"
    assert activity_line["activity"] == "migrate_service"
    assert activity_line["run_id"] == "r1"


def test_level_filters_structlog_and_stdlib(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=stream)
    structlog.stdlib.get_logger("platform.test").info("quiet")
    logging.getLogger("yoyo").info("quiet too")
    structlog.stdlib.get_logger("platform.test").warning("loud")

    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_console_mode_renders_readable_redacted_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="console"), stream=stream)
    structlog.stdlib.get_logger("platform.worker").info(
        "worker polling task queue", task_queue="platform-tenants"
    )
    try:
        raise RuntimeError(f"leaked {JWT}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("request failed")

    text = stream.getvalue()
    first = text.splitlines()[0]
    assert "[info" in first
    assert "worker polling task queue" in first
    assert "[platform.worker]" in first
    assert "task_queue=platform-tenants" in first
    assert not first.startswith("{")
    assert "RuntimeError: leaked ***" in text
    assert_no_secret(text)


def test_configuring_twice_installs_one_handler(restore_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(log_format="json"), stream=first)
    configure_logging(Settings(log_format="json"), stream=second)
    logging.getLogger("platform.test").warning("once")

    assert first.getvalue() == ""
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == ["once"]


def test_uvicorn_loggers_are_taken_over(restore_logging: None) -> None:
    stray = io.StringIO()
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(stray))
    logging.getLogger("uvicorn.error").propagate = False
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=stream)
    logging.getLogger("uvicorn.error").warning("Started server process")

    assert stray.getvalue() == ""
    assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"


# What a hostile request path or token subject carries: an OSC sequence that sets the
# terminal's title, a BEL, a NUL, a forged line, a Unicode line separator.
HOSTILE = "x\x1b]0;PWNED\x07 acme\x00 a\r\nFORGED b\u2028c \x9b"
# Raw controls (C0 but the newline, DEL, C1) and the Unicode line and paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def log_hostile_values() -> None:
    structlog.stdlib.get_logger("platform.api.access").info(
        "request", route="/api/tenants/{tenant_id}", tenant_id=HOSTILE, path=[HOSTILE]
    )
    logging.getLogger("platform.api").warning("unhandled error on GET %s", HOSTILE)
    try:
        raise ValueError(f"bad id {HOSTILE}")
    except ValueError:
        logging.getLogger("platform.api").exception("failed for %s", HOSTILE)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_control_characters_are_escaped_in_every_line(
    restore_logging: None, log_format: str
) -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format=log_format), stream=stream)

    log_hostile_values()

    text = stream.getvalue()
    assert RAW_CONTROL.findall(text) == []
    lines = text.splitlines()
    # Three records; the console renders the traceback on lines of its own.
    assert sum("PWNED" in line for line in lines) >= 3
    # No forged line outside a traceback, whose own line breaks must stay.
    before_traceback = text.split("Traceback")[0].splitlines()
    assert all("FORGED" not in line or "PWNED" in line for line in before_traceback)
    if log_format == "json":
        record = json.loads(lines[0])
        assert record["tenant_id"] == "x\\x1b]0;PWNED\\x07 acme\\x00 a\\r\\nFORGED b\\u2028c \\x9b"
        assert record["path"] == [record["tenant_id"]]
        assert "Traceback (most recent call last):\n" in json.loads(lines[2])["exception"]
    else:
        assert "x\\x1b]0;PWNED\\x07 acme\\x00" in text
        assert "Traceback (most recent call last):" in text


def test_printable_text_is_left_alone() -> None:
    assert printable("tenant acme_1 — ünïcode, tabs? no") == "tenant acme_1 — ünïcode, tabs? no"
    assert printable("line\nbreak\ttab", multiline=True) == "line\nbreak\ttab"
    assert printable("line\nbreak") == "line\\nbreak"


def test_each_request_is_logged_once_not_also_by_uvicorns_access_log(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    # What uvicorn's access logger writes for every request; the API's middleware already logs
    # each request with its route, status and duration.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200
    )
    logging.getLogger("platform.api").info("request")
    assert [line["event"] for line in json_logs()] == ["request"]


def test_the_strings_a_line_repeats_are_masked_once(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    from infra.telemetry import logging as platform_logging

    secret = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    access = structlog.stdlib.get_logger("platform.api.access")

    def line() -> None:
        access.info("request", route="/api/tenants/{tenant_id}", tenant_id="acme", auth=secret)

    line()
    remembered = platform_logging._masked_short.cache_info().hits
    line()

    # The event, logger, level, route, tenant id and token: every short string but the time.
    assert platform_logging._masked_short.cache_info().hits - remembered >= 6
    first, second = json_logs()
    assert first["auth"] == second["auth"] == "***"
    assert (first["route"], first["tenant_id"]) == ("/api/tenants/{tenant_id}", "acme")


@given(st.text(alphabet="0123456789abcdefABCDEFTZ:.+-", max_size=80))
def test_hex_and_timestamp_text_passes_unmasked_because_no_pattern_can_match_it(
    text: str,
) -> None:
    # `masked` passes such text without running the patterns (a line's time and request id):
    # sound only while no pattern can change it.
    assert printable(redact(text)) == text
    assert masked(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-06T18:40:40.921Z",
        "ab12cd34ef56ab78",
        "eyJ0eXAi.eyJzdWIi.sig",
        "token:abc",
        "Bearer abc",
    ],
)
def test_masked_agrees_with_redact_on_short_values(text: str) -> None:
    assert masked(text) == printable(redact(text))
