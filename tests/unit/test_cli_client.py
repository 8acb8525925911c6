"""platformctl's HTTP side at the transport (httpx.MockTransport): one line per failure, the
exit code of each kind, and the pages of a list."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from cli.client import ApiClient, problem_message
from cli.errors import ApiProblem, CliError, ExitCode, exit_code_for_status

PROBLEM = "application/problem+json"


def client(handler: Any, token: str | None = "t0ken") -> ApiClient:
    return ApiClient("http://api.test", token, transport=httpx.MockTransport(handler))


def answer(status: int, body: Any, content_type: str = PROBLEM) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=json.dumps(body).encode(), headers={"content-type": content_type}
        )

    return handler


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ExitCode.USAGE),
        (413, ExitCode.USAGE),
        (415, ExitCode.USAGE),
        (422, ExitCode.USAGE),
        (405, ExitCode.USAGE),
        (401, ExitCode.AUTH),
        (403, ExitCode.AUTH),
        (404, ExitCode.NOT_FOUND),
        (409, ExitCode.CONFLICT),
        (429, ExitCode.SERVER),
        (500, ExitCode.SERVER),
        (502, ExitCode.SERVER),
        (503, ExitCode.SERVER),
    ],
)
def test_each_error_status_has_its_exit_code(status: int, code: ExitCode) -> None:
    assert exit_code_for_status(status) is code
    with pytest.raises(ApiProblem) as raised:
        client(answer(status, {"title": "T", "status": status, "detail": "d"})).get("/x")
    assert raised.value.exit_code is code
    assert raised.value.message == f"T ({status}): d"


def test_the_exit_codes_are_the_documented_numbers() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6]


def test_a_validation_problem_names_every_field_on_one_line() -> None:
    problem = {
        "title": "Invalid request",
        "status": 422,
        "detail": "invalid value for: id, slaTier",
        "errors": [
            {"field": "id", "message": "String should match pattern"},
            {"field": "slaTier", "message": "Input should be 'BASIC'"},
        ],
    }
    with pytest.raises(ApiProblem) as raised:
        client(answer(422, problem)).post("/api/tenants", {})
    assert raised.value.message == (
        "Invalid request (422): invalid value for: id, slaTier "
        "[id: String should match pattern; slaTier: Input should be 'BASIC']"
    )
    assert raised.value.problem == problem


def test_an_answer_without_problem_detail_says_status_and_request() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(ApiProblem) as raised:
        client(html).get("/api/tenants/acme")
    assert raised.value.exit_code is ExitCode.SERVER
    assert raised.value.message == "Bad Gateway (502) from GET http://api.test/api/tenants/acme"


def test_escape_sequences_from_the_server_never_reach_the_terminal() -> None:
    response = httpx.Response(
        404,
        json={"title": "Tenant not found", "detail": "no tenant x\x1b]0;PWNED\x07\nsecond"},
        request=httpx.Request("GET", "http://api.test/x"),
    )
    message, _ = problem_message(response)
    assert "\x1b" not in message
    assert "\n" not in message
    assert message == "Tenant not found (404): no tenant x\\x1b]0;PWNED\\x07\\nsecond"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect to http://api.test"),
        (httpx.ReadTimeout("timed out"), "no answer from http://api.test within 30 s"),
        (httpx.RemoteProtocolError("peer closed"), "RemoteProtocolError: peer closed"),
    ],
)
def test_transport_failures_are_server_errors(error: Exception, says: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(CliError) as raised:
        client(fail).get("/api/tenants")
    assert raised.value.exit_code is ExitCode.SERVER
    assert says in raised.value.message


def test_no_token_is_an_auth_error_before_any_request() -> None:
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={})

    with pytest.raises(CliError) as raised:
        client(record, token=None).get("/api/tenants")
    assert raised.value.exit_code is ExitCode.AUTH
    assert requests == []


def test_the_token_is_sent_as_a_bearer_and_none_params_are_left_out() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    assert client(record, token=" t0ken\n").get("/api/tenants", status=None, slaTier="BASIC") == {
        "ok": True
    }
    assert seen[0].headers["authorization"] == "Bearer t0ken"
    assert str(seen[0].url) == "http://api.test/api/tenants?slaTier=BASIC"


def test_a_success_without_json_is_not_the_api() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>")

    with pytest.raises(CliError) as raised:
        client(html).get("/api/tenants")
    assert raised.value.exit_code is ExitCode.SERVER
    assert "without JSON" in raised.value.message


def test_a_url_that_is_not_http_is_a_usage_error() -> None:
    with pytest.raises(CliError) as raised:
        ApiClient("127.0.0.1:8000", "t")
    assert raised.value.exit_code is ExitCode.USAGE


def test_collect_follows_cursors_up_to_the_limit() -> None:
    rows = [{"id": f"t{i:03d}"} for i in range(250)]
    asked: list[dict[str, str]] = []

    def pages(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        start = int(params.get("cursor", "0"))
        end = start + int(params["limit"])
        cursor = str(end) if end < len(rows) else None
        return httpx.Response(200, json={"items": rows[start:end], "nextCursor": cursor})

    api = client(pages)
    some = api.collect("/api/tenants", 130, status="ACTIVE")
    assert [r["id"] for r in some["items"]] == [r["id"] for r in rows[:130]]
    assert some["nextCursor"] == "130"
    assert [(a["limit"], a.get("cursor")) for a in asked] == [("100", None), ("30", "100")]
    assert {a["status"] for a in asked} == {"ACTIVE"}

    everything = api.collect("/api/tenants", 1000, cursor="130")
    assert len(everything["items"]) == 120
    assert everything["nextCursor"] is None
