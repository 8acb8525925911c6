"""What a JSON body may be, checked once the guard has read it and before FastAPI parses it.

    nesting      at most 64 arrays/objects deep
    numbers      at most 100 characters each (sign, digits, fraction and exponent)

No request model needs more; beyond them Python's parser either recurses until RecursionError
(5,000 levels) or refuses the integer (past 4,300 digits), which FastAPI turns into a 400 that
says nothing of where. `check_json` answers every body that is not acceptable JSON, over a limit
or malformed, with one `MalformedBody` naming the byte offset where it stopped (for malformed
JSON the offset in the bytes sent, not the character index Python's parser reports).
"""

from __future__ import annotations

import json
import re

from api.errors import MalformedBody

MAX_JSON_DEPTH = 64
MAX_JSON_NUMBER = 100

_NUMBER_CHAR = rb"[-+.0-9eE]"
# Strings (skipped whole: what they hold is text; one never closed runs to the end, so no
# quote inside it starts another scan), brackets, and runs of number characters.
_TOKENS = re.compile(
    rb'"[^"\\]*+(?:\\.?[^"\\]*+)*+(?:"|\Z)|[\[{]|[\]}]|' + _NUMBER_CHAR + rb"++", re.DOTALL
)
# A run of number characters long enough that some number may be over the limit.
_LONG_RUN = re.compile(
    rb"(?<!" + _NUMBER_CHAR + rb")" + _NUMBER_CHAR + rb"{%d}" % (MAX_JSON_NUMBER + 1)
)


def _limit_breach(body: bytes) -> tuple[int, str] | None:
    """The byte offset and reason of the first place `body` passes a limit, in reading order."""
    openers = body.count(b"[") + body.count(b"{")
    if openers <= MAX_JSON_DEPTH and _LONG_RUN.search(body) is None:
        return None
    depth = 0
    for token in _TOKENS.finditer(body):
        first = body[token.start()]
        if first == ord('"'):
            continue
        if first in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return token.start(), f"nested deeper than {MAX_JSON_DEPTH} levels"
        elif first in b"]}":
            depth -= 1
        elif token.end() - token.start() > MAX_JSON_NUMBER:
            return token.start(), f"a number longer than {MAX_JSON_NUMBER} characters"
    return None


def _decode_error(body: bytes) -> tuple[int, str] | None:
    """Where and why Python's parser stops on `body`, as a byte offset; None if it parses.
    A body too deep or with too long a number for the parser itself has a breach that
    `_limit_breach` reports first."""
    try:
        json.loads(body)
    except json.JSONDecodeError as error:
        return len(error.doc[: error.pos].encode("utf-8", "surrogatepass")), error.msg
    except UnicodeDecodeError as error:
        return error.start, f"not {error.encoding}"
    except (RecursionError, ValueError) as error:
        return len(body), f"the parser gave up ({type(error).__name__})"
    return None


def check_json(body: bytes) -> None:
    """Raise MalformedBody, naming the byte, unless `body` is JSON within the limits."""
    failures = [found for found in (_limit_breach(body), _decode_error(body)) if found]
    if not failures:
        return
    position, reason = min(failures)
    raise MalformedBody(
        f"the body is not acceptable JSON: {reason} at byte {position}", position=position
    )
