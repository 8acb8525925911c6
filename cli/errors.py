"""Errors of platformctl and the one mapping from what went wrong to the process's exit code.

    CliError                 carries its ExitCode and one line for stderr
    └── ApiProblem           an error answer of the API (RFC 9457 problem detail)

Exit codes, by kind (automation branches on them, so they are part of the CLI's contract):

    0  OK            the command did what it was asked
    1  CHECK_FAILED  the checked condition did not hold: `--wait` not ACTIVE (a move's: not
                     switched), `--watch` not SUCCEEDED, `--require` not met, a confirmation
                     declined
    2  USAGE         usage or invalid input: bad options (Click), API 400/413/415/422 and
                     any other 4xx not listed below
    3  NOT_FOUND     API 404
    4  CONFLICT      API 409, or `tenants retry` on a tenant with nothing to retry
    5  AUTH          API 401/403, or no token given
    6  SERVER        API 5xx or 429, cannot connect, timeout, an answer that is not JSON
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The process's exit code by kind of outcome (see the module docstring)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    AUTH = 5
    SERVER = 6


# Shown under every `--help` and in docs/operating/platformctl.md: keep it in step with ExitCode.
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the checked condition failed (--wait not ACTIVE or a move not "
    "switched, --watch not SUCCEEDED, --require not met); "
    "2 usage or invalid input (also API 400/413/415/422); "
    "3 not found (404); 4 conflict (409); 5 auth (401/403, no token); "
    "6 server (5xx, cannot connect, timeout)."
)


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code of an API error answer with HTTP `status`."""
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    # Too many requests: the request was fine, the server wants it later.
    if status == 429 or status >= 500:
        return ExitCode.SERVER
    if 400 <= status < 500:
        return ExitCode.USAGE
    # Not an error status (a 3xx the client did not follow): the server is not the API.
    return ExitCode.SERVER


class CliError(Exception):
    """A failure reported as one line on stderr and an exit code; nothing on stdout."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class ApiProblem(CliError):
    """The API answered with an error; `problem` is its problem detail (or {} if it had none)."""

    def __init__(self, status: int, message: str, problem: dict[str, object]) -> None:
        super().__init__(exit_code_for_status(status), message)
        self.status = status
        self.problem = problem
