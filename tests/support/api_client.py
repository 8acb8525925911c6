"""The API under uvicorn for tests of what it accepts: a client holding a token of the test
identity provider, with or without a worker behind the API."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from api.auth import ALL_SCOPES
from api.console.session import SESSION_COOKIE
from api.main import create_app
from devstack.tokens import mint
from tenancy.settings import Settings
from tests.conftest import running_worker
from tests.support.servers import serve

EVERY_SCOPE = ALL_SCOPES


def token_of(keys_dir: Path, subject: str = "prober", *scopes: str) -> str:
    """A token the API trusts (every scope unless given)."""
    return mint(
        keys_dir / "idp.pem",
        subject=subject,
        scopes=scopes or EVERY_SCOPE,
        audience="platform-service",
    )


@asynccontextmanager
async def api_client(
    settings: Settings,
    keys_dir: Path,
    *,
    temporal: Client | None = None,
    subject: str = "prober",
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API served from `settings`, its token both the bearer token and
    the console's session; with `temporal`, a worker of the settings' task queue runs behind it
    (without, runs may start but no worker takes them)."""
    token = token_of(keys_dir, subject)
    async with AsyncExitStack() as stack:
        if temporal is not None:
            await stack.enter_async_context(running_worker(temporal, settings))
        base_url = stack.enter_context(serve(create_app(settings)))
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=base_url,
                timeout=60,
                headers={"Authorization": f"Bearer {token}"},
                cookies={SESSION_COOKIE: token},
            )
        )
        yield http


def tenant_cursor(insert_xid: Any, created_at: Any, tenant_id: Any) -> str:
    """A tenant-list cursor holding the given position (as the API encodes its own)."""
    raw = json.dumps([insert_xid, created_at, tenant_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fields_of(problem: httpx.Response) -> set[str]:
    """The fields a 422 problem names."""
    return {error["field"] for error in problem.json().get("errors", [])}
