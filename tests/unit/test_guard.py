"""The route guard, driven as raw ASGI: who is refused before the body is read, and how much
of a body is read before a 413."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from starlette.types import Message

from api.auth import READ_SCOPE, WRITE_SCOPE, StaticKey, TokenVerifier
from api.deps import Writer
from api.errors import install_error_handlers
from api.guard import GuardedRoute, is_json
from devstack.tokens import mint
from infra.security.keys import generate_private_key, load_public_key

LIMIT = 4096
CHUNK = 1024


class Thing(BaseModel):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=GuardedRoute)

    @router.post("/things")
    async def create(principal: Writer, thing: Thing) -> dict[str, str]:
        return {"name": thing.name, "by": principal.subject}

    @router.post("/maybe")
    async def maybe(principal: Writer, thing: Thing | None = None) -> dict[str, str | None]:
        return {"name": thing.name if thing else None, "by": principal.subject}

    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("guard") / "idp.pem"
    generate_private_key(key)
    return key


@dataclass
class Exchange:
    """One request sent as ASGI messages; counts how often the app asked for the body."""

    chunks: list[bytes]
    receives: int = 0
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        self.receives += 1
        if self.receives <= len(self.chunks):
            more = self.receives < len(self.chunks)
            return {
                "type": "http.request",
                "body": self.chunks[self.receives - 1],
                "more_body": more,
            }
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> dict[str, Any]:
        data = b"".join(m.get("body", b"") for m in self.sent[1:])
        parsed: dict[str, Any] = json.loads(data)
        return parsed


async def exchange(
    idp: Path, headers: dict[str, str], chunks: list[bytes], *scopes: str, path: str = "/things"
) -> Exchange:
    verifier = TokenVerifier(
        StaticKey(load_public_key(idp)), audience="api", issuer=None, algorithms=["ES256"]
    )
    if scopes:
        token = mint(idp, subject="alice", scopes=scopes, audience="api")
        headers = headers | {"authorization": f"Bearer {token}"}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {"verifier": verifier, "max_body_bytes": LIMIT},
    }
    result = Exchange(chunks)
    await build_app()(scope, result.receive, result.send)
    return result


JSON = {"content-type": "application/json"}
HUGE_DECLARED = JSON | {"content-length": str(10**9)}
# An unterminated JSON array, CHUNK bytes at a time.
STREAM = [b"[" + b"1," * (CHUNK // 2 - 1) + b"1"] + [b",1" * (CHUNK // 2)] * 999


@pytest.mark.parametrize(
    ("headers", "scopes", "status"),
    [
        pytest.param(HUGE_DECLARED, (), 401, id="anonymous"),
        pytest.param(HUGE_DECLARED, (READ_SCOPE,), 403, id="read-only"),
        pytest.param({"content-type": "text/plain"}, (WRITE_SCOPE,), 415, id="text-plain"),
        pytest.param({}, (WRITE_SCOPE,), 415, id="no-content-type"),
        pytest.param(HUGE_DECLARED, (WRITE_SCOPE,), 413, id="declared-too-large"),
    ],
)
async def test_refused_before_a_byte_of_the_body_is_read(
    idp: Path, headers: dict[str, str], scopes: tuple[str, ...], status: int
) -> None:
    result = await exchange(idp, headers, STREAM, *scopes)

    assert result.status == status
    assert result.receives == 0


async def test_a_streamed_body_is_read_only_until_it_passes_the_limit(idp: Path) -> None:
    result = await exchange(idp, JSON, STREAM, WRITE_SCOPE)

    assert result.status == 413
    assert result.body["maxBytes"] == LIMIT
    assert result.receives == LIMIT // CHUNK + 1


async def test_a_body_within_the_limit_reaches_the_route(idp: Path) -> None:
    result = await exchange(idp, JSON, [b'{"name":', b' "x"}'], WRITE_SCOPE)

    assert result.status == 200
    assert result.body == {"name": "x", "by": "alice"}


async def test_unparseable_json_is_a_400_with_its_position(idp: Path) -> None:
    result = await exchange(idp, JSON, [b'{"name": }'], WRITE_SCOPE)

    assert result.status == 400
    assert result.body["position"] == 9


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_is_json(content_type: str | None, expected: bool) -> None:
    assert is_json(content_type) is expected


@pytest.mark.parametrize(
    ("headers", "chunks", "status", "name"),
    [
        pytest.param({}, [b""], 200, None, id="no-body"),
        pytest.param({"content-length": "0"}, [b""], 200, None, id="empty-body"),
        pytest.param(JSON, [b'{"name": "x"}'], 200, "x", id="json-body"),
        pytest.param({"content-length": "13"}, [b'{"name": "x"}'], 415, None, id="undeclared"),
        pytest.param({"transfer-encoding": "chunked"}, [b"{}"], 415, None, id="chunked"),
    ],
)
async def test_an_optional_body_may_be_left_out_but_not_sent_undeclared(
    idp: Path, headers: dict[str, str], chunks: list[bytes], status: int, name: str | None
) -> None:
    result = await exchange(idp, headers, chunks, WRITE_SCOPE, path="/maybe")

    assert result.status == status
    if status == 200:
        assert result.body == {"name": name, "by": "alice"}
    else:
        assert result.receives == 0
