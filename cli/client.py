"""The HTTP side of platformctl: one `httpx.Client` per invocation, and the translation of
every way a call can fail into a CliError with one clear line (see cli.errors)."""

from __future__ import annotations

from typing import Any

import httpx

from cli.errors import ApiProblem, CliError, ExitCode
from tenancy.text import escape_unprintable

DEFAULT_TIMEOUT = 30.0
# The largest page the list endpoints hand out (GET /api/tenants: le=100).
MAX_PAGE = 100


def one_line(text: str, limit: int = 1000) -> str:
    """`text` safe to print as one line, at most `limit` characters: whatever the server sends
    reaches the terminal with every character that is not printable escaped (controls, line
    separators, bidi overrides that would reorder a table)."""
    flat = escape_unprintable(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def problem_message(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The line that says what an error answer means, and its problem detail ({} when the
    answer is not RFC 9457 `application/problem+json`, e.g. a proxy's HTML page)."""
    problem: dict[str, Any] = {}
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            problem = body
    title = problem.get("title") or response.reason_phrase or "Error"
    line = f"{title} ({response.status_code})"
    if problem.get("detail"):
        line += f": {problem['detail']}"
    elif not problem:
        line += f" from {response.request.method} {response.request.url}"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        fields = [
            f"{e.get('field', '?')}: {e.get('message', 'invalid')}"
            for e in errors
            if isinstance(e, dict)
        ]
        line += " [" + "; ".join(fields) + "]"
    return one_line(line), problem


class ApiClient:
    """The API at `base_url`, called with `token`; every failure raises a CliError."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise CliError(ExitCode.USAGE, f"--url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token.strip() if token else None
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Call the API and return its JSON answer; raise a CliError for anything else."""
        if not self._token:
            raise CliError(ExitCode.AUTH, "no token: set PLATFORM_TOKEN or pass --token")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                params=query,
                json=json,
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except httpx.ConnectError as exc:
            raise CliError(
                ExitCode.SERVER, one_line(f"cannot connect to {self.base_url}: {exc}")
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                ExitCode.SERVER,
                f"no answer from {self.base_url} within {self._timeout:g} s ({method} {path})",
            ) from None
        except httpx.TransportError as exc:
            raise CliError(
                ExitCode.SERVER,
                one_line(f"talking to {self.base_url} failed: {type(exc).__name__}: {exc}"),
            ) from None
        if not response.is_success:
            message, problem = problem_message(response)
            raise ApiProblem(response.status_code, message, problem)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                ExitCode.SERVER,
                f"{method} {response.request.url} answered {response.status_code} without JSON; "
                "is --url the Platform Service API?",
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` with query `params` (None values left out)."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        """POST `body` as JSON (or nothing) to `path`."""
        return self.request("POST", path, params=params, json=body)

    def patch(self, path: str, body: Any) -> Any:
        """PATCH `path` with `body` as JSON."""
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE `path` with query `params`."""
        return self.request("DELETE", path, params=params)

    def collect(self, path: str, limit: int, **params: Any) -> dict[str, Any]:
        """Follow `nextCursor` until `limit` items are read or the list ends; the answer has
        the API's shape, `{"items", "nextCursor"}`, where `nextCursor` continues after the
        last item returned (null at the end)."""
        items: list[Any] = []
        cursor = params.pop("cursor", None)
        while True:
            page = self.get(path, **params, limit=min(MAX_PAGE, limit - len(items)), cursor=cursor)
            items.extend(page["items"])
            cursor = page.get("nextCursor")
            # An empty page ends it too: a cursor that hands out nothing would spin forever.
            if cursor is None or len(items) >= limit or not page["items"]:
                return {"items": items, "nextCursor": cursor}
