"""The platform's directory endpoints over HTTP: one tenant's location (with its ETag, so an
unchanged entry costs a 304) and the paged listing of every location."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tenant_directory.errors import DirectoryError, TenantNotFound
from tenant_directory.location import Location


class Unreachable(Exception):
    """The API did not answer usefully: a connection error, a timeout or a 5xx."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A 200: the location and its ETag (None if the server sent none)."""

    location: Location
    etag: str | None


class NotModified:
    """A 304: the location the ETag names is still current."""


NOT_MODIFIED = NotModified()


@dataclass(frozen=True, slots=True)
class Listing:
    """Every location, and the stream sequence the listing is consistent at (None: the
    platform publishes no NATS events, so there is nothing to follow)."""

    locations: list[Location]
    sequence: int | None


class DirectoryApi:
    """Calls to one platform API with one bearer token, on the given client."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._auth = f"Bearer {token}"

    async def location(self, tenant_id: str, etag: str | None) -> Fetched | NotModified:
        """`GET /api/tenants/{id}/location`, conditional on `etag` when there is one."""
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if etag is not None:
            headers["If-None-Match"] = etag
        response = await self._get(f"/api/tenants/{quote(tenant_id, safe='')}/location", headers)
        if response.status_code == 304:
            return NOT_MODIFIED
        if response.status_code == 404:
            raise TenantNotFound(tenant_id)
        body = self._json(response)
        return Fetched(self._location(body), response.headers.get("ETag"))

    async def listing(self, page_size: int | None) -> Listing:
        """Every page of `GET /api/tenant-locations`, following `nextCursor`; the events
        position comes with the first page."""
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        locations: list[Location] = []
        sequence: int | None = None
        cursor: str | None = None
        first = True
        while first or cursor is not None:
            params = {} if page_size is None else {"limit": str(page_size)}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._json(await self._get("/api/tenant-locations", headers, params))
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise Unreachable("the listing is not an object with items")
            locations.extend(self._location(item) for item in page["items"])
            if first:
                sequence = _sequence(page.get("eventsPosition"))
            cursor = page.get("nextCursor")
            if cursor is not None and not isinstance(cursor, str):
                raise Unreachable("the listing's nextCursor is not a string")
            first = False
        return Listing(locations, sequence)

    async def _get(
        self, path: str, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self._client.get(self._url + path, headers=headers, params=params)
        except httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise Unreachable(f"{path} answered {response.status_code}")
        if response.status_code not in (200, 304, 404):
            raise DirectoryError(f"{path} answered {response.status_code}: {response.text[:200]}")
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise Unreachable(f"the answer is not JSON: {exc}") from exc

    @staticmethod
    def _location(data: Any) -> Location:
        try:
            return Location.from_json(data)
        except ValueError as exc:
            raise Unreachable(f"the answer is not a location: {exc}") from exc


def _sequence(position: Any) -> int | None:
    if position is None:
        return None
    sequence = position.get("sequence") if isinstance(position, dict) else None
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise Unreachable("the listing's eventsPosition has no integer sequence")
    return sequence
