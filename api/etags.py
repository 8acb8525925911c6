"""Conditional GETs (RFC 9110 section 13): a strong `ETag` on an answer, `Cache-Control:
no-cache` (a cache may keep it, and asks again with `If-None-Match` before using it), and `304
Not Modified` with no body when the caller already holds the current representation."""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

CACHE_CONTROL = "no-cache"
# An entity tag in an If-None-Match list, weak or strong; its opaque part may hold commas.
_TAG = re.compile(r'(?:W/)?("[^"]*")')


def shape_of(model: type[BaseModel]) -> str:
    """A short digest of `model`'s JSON schema, for tags made of the values an answer is built
    from: a release that changes the answer's shape changes them too."""
    schema = json.dumps(model.model_json_schema(mode="serialization"), sort_keys=True)
    return hashlib.blake2b(schema.encode(), digest_size=4).hexdigest()


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match: header` matches the current `etag`: `*` matches any, and a list
    matches when one of its tags does by the weak comparison the header asks for."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag.removeprefix("W/") in _TAG.findall(header)


def conditional_json(request: Request, body: bytes, etag: str) -> Response:
    """The JSON `body` with its `etag`, or 304 without a body when the request's
    If-None-Match matches it; both say `Cache-Control: no-cache`."""
    if none_match(request.headers.get("if-none-match"), etag):
        return not_modified(etag)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    return Response(body, media_type="application/json", headers=headers)


def not_modified(etag: str) -> Response:
    """304 without a body: the caller's representation, tagged `etag`, is current."""
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
