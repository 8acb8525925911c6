"""`TenantDirectory`: a tenant's location from a local cache, kept current by revalidation
(`If-None-Match` once an entry is older than `max_age`) or, with an events URL, by the
platform's lifecycle events (list every location, then follow the stream from the listing's
position: no change is missed in between)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from types import TracebackType
from typing import Self

import httpx
from nats.aio.subscription import Subscription

from tenant_directory.api import NOT_MODIFIED, DirectoryApi, Fetched, Unreachable
from tenant_directory.errors import DirectoryError, DirectoryUnavailable, TenantNotFound
from tenant_directory.location import Location
from tenant_directory.watch import NATS_FAILURES, EventFeed

_log = logging.getLogger("tenant_directory")


@dataclass(slots=True)
class Stats:
    """Counters since the directory started.

    hits: gets answered from the cache without asking the API;
    misses: API requests for a tenant not in the cache;
    revalidations: API requests for a cached tenant (too old, invalidated, or not watched);
    not_modified: revalidations answered 304;
    events_applied: lifecycle events that changed the cache (an older epoch changes nothing);
    stale_served: gets answered with `stale=True` while the API was unreachable;
    errors: API requests that failed (connection error, timeout, 5xx, refused).
    """

    hits: int = 0
    misses: int = 0
    revalidations: int = 0
    not_modified: int = 0
    events_applied: int = 0
    stale_served: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Entry:
    location: Location
    etag: str | None
    # When the API (or the listing, or an event) last vouched for it (time.monotonic()).
    checked_at: float


class TenantDirectory:
    """Where each tenant's storage is, for a service that serves many tenants.

    Use it as an async context manager::

        async with TenantDirectory("https://platform.example", token) as directory:
            location = await directory.get("acme")

    `url` is the platform API's base URL and `token` a bearer token with `directory:read`.
    Without `events_url`, a cached entry older than `max_age` is revalidated with
    `If-None-Match`. With `events_url` (NATS), the cache is filled from the listing and kept
    current by the lifecycle events; while that watch is healthy `get` never asks the API
    for a cached tenant, and while it is broken the directory revalidates as without it.
    When the API is unreachable, an entry confirmed within `max_age + stale_if_error` is
    served with `stale=True` (a WARNING log line, `stats.stale_served`); past that, `get`
    raises `DirectoryUnavailable`. An entry is never replaced by one of a lower epoch.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        events_url: str | None = None,
        max_age: timedelta = timedelta(seconds=5),
        stale_if_error: timedelta = timedelta(minutes=5),
        timeout: timedelta = timedelta(seconds=2),
        page_size: int | None = None,
        retry_wait: timedelta = timedelta(seconds=1),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`page_size`: the listing's `limit` (None: the server's default); `retry_wait`: how
        long after the API failed `get` answers from the cache (stale) without asking it again,
        and the pause before watching the events again after the watch broke; `transport`:
        httpx's, for a proxy or tests."""
        self._url, self._token, self._events_url = url, token, events_url
        self._max_age = max_age.total_seconds()
        self._stale_if_error = stale_if_error.total_seconds()
        self._timeout = timeout.total_seconds()
        self._page_size = page_size
        self._retry_wait = retry_wait.total_seconds()
        self._transport = transport
        self._entries: dict[str, _Entry] = {}
        self._invalidated: set[str] = set()
        self._inflight: dict[str, asyncio.Future[Location]] = {}
        self._stats = Stats()
        self._client: httpx.AsyncClient | None = None
        self._api: DirectoryApi | None = None
        self._feed: EventFeed | None = None
        self._follower: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._watching = False
        # Until when a watch, now broken, vouched for every entry (time.monotonic()).
        self._watched_until = 0.0
        # Until when the API, which just failed, is not asked again, and why it failed.
        self._api_down_until = 0.0
        self._api_down_reason = ""

    async def __aenter__(self) -> Self:
        """Open the HTTP client; with `events_url`, list and start watching (returns once the
        first attempt succeeded or failed: a failed one is retried in the background)."""
        self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        self._api = DirectoryApi(self._client, self._url, self._token)
        if self._events_url is not None:
            self._feed = EventFeed(self._events_url)
            self._follower = asyncio.create_task(self._follow(self._feed))
            # A NATS server that is away reports its failed attempts through `broken`.
            waits = [
                asyncio.ensure_future(self._first_attempt.wait()),
                asyncio.ensure_future(self._feed.broken.wait()),
            ]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop watching and close the connections."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._feed is not None:
            await self._feed.close()
        if self._client is not None:
            await self._client.aclose()

    @property
    def stats(self) -> Stats:
        """A copy of the counters."""
        return replace(self._stats)

    @property
    def watching(self) -> bool:
        """Whether the lifecycle events keep the cache current right now."""
        return self._watching

    def peek(self, tenant_id: str) -> Location | None:
        """What the cache holds for the tenant, however old, without asking the API or
        counting."""
        entry = self._entries.get(tenant_id)
        return None if entry is None else entry.location

    def invalidate(self, tenant_id: str) -> None:
        """Make the next `get` of this tenant ask the API (for a caller whose storage refused
        it: the location may have changed). The entry stays for its epoch and as a stale
        fallback."""
        self._invalidated.add(tenant_id)

    async def get(self, tenant_id: str) -> Location:
        """The tenant's location: from the cache while it is current, else from the API.

        Raises `TenantNotFound` (404), `DirectoryUnavailable` (API unreachable, nothing recent
        enough cached) or `DirectoryError` (the API refused the token)."""
        entry = self._entries.get(tenant_id)
        if entry is not None and self._current(tenant_id, entry):
            self._stats.hits += 1
            return entry.location
        # Concurrent gets of one tenant share one request.
        pending = self._inflight.get(tenant_id)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(tenant_id, entry))
            self._inflight[tenant_id] = pending
            pending.add_done_callback(lambda done: self._settled(tenant_id, done))
        return await asyncio.shield(pending)

    def _settled(self, tenant_id: str, done: asyncio.Future[Location]) -> None:
        if self._inflight.get(tenant_id) is done:
            del self._inflight[tenant_id]
        if not done.cancelled():
            # Read here, so an error nobody awaits any more is not reported as unretrieved.
            done.exception()

    def _current(self, tenant_id: str, entry: _Entry) -> bool:
        if tenant_id in self._invalidated:
            return False
        if self._watching:
            return True
        return time.monotonic() - self._vouched_at(entry) < self._max_age

    def _vouched_at(self, entry: _Entry) -> float:
        return max(entry.checked_at, self._watched_until)

    async def _ask(self, tenant_id: str, entry: _Entry | None) -> Location:
        assert self._api is not None, "use TenantDirectory in `async with`"
        if time.monotonic() < self._api_down_until:
            # Every caller would otherwise wait for the same failure (a timeout, say).
            return self._stale(tenant_id, f"{self._api_down_reason}, retried after retry_wait")
        if entry is None:
            self._stats.misses += 1
        else:
            self._stats.revalidations += 1
        etag = entry.etag if entry is not None else None
        try:
            answer = await self._api.location(tenant_id, etag)
        except TenantNotFound:
            self._api_down_until = 0.0
            self._entries.pop(tenant_id, None)
            self._invalidated.discard(tenant_id)
            raise
        except Unreachable as exc:
            self._stats.errors += 1
            self._api_down_until = time.monotonic() + self._retry_wait
            self._api_down_reason = str(exc)
            return self._stale(tenant_id, str(exc))
        except DirectoryError:
            self._stats.errors += 1
            raise
        self._api_down_until = 0.0
        self._invalidated.discard(tenant_id)
        now = time.monotonic()
        if isinstance(answer, Fetched):
            return self._merge(answer.location, answer.etag, now).location
        assert answer is NOT_MODIFIED
        assert entry is not None, "a 304 answers a conditional request, made with an entry"
        self._stats.not_modified += 1
        return self._merge(entry.location, entry.etag, now).location

    def _merge(self, location: Location, etag: str | None, checked_at: float) -> _Entry:
        """Keep the newer of the cached entry and `location` (by epoch); an equal epoch is the
        same location, confirmed again."""
        current = self._entries.get(location.tenant_id)
        if current is not None and current.location.epoch > location.epoch:
            return current
        if current is not None and current.location.epoch == location.epoch:
            current.checked_at = max(current.checked_at, checked_at)
            current.etag = etag or current.etag
            return current
        entry = _Entry(location, etag, checked_at)
        self._entries[location.tenant_id] = entry
        return entry

    def _stale(self, tenant_id: str, reason: str) -> Location:
        entry = self._entries.get(tenant_id)
        if entry is None:
            raise DirectoryUnavailable(f"tenant {tenant_id!r}: the API is unreachable: {reason}")
        age = time.monotonic() - self._vouched_at(entry)
        if age > self._max_age + self._stale_if_error:
            raise DirectoryUnavailable(
                f"tenant {tenant_id!r}: the API is unreachable ({reason}) and the cached "
                f"location was confirmed {age:.1f}s ago, past max_age + stale_if_error"
            )
        self._stats.stale_served += 1
        _log.warning(
            "tenant %s: the API is unreachable (%s); serving the location of epoch %d "
            "confirmed %.1fs ago (stale)",
            tenant_id,
            reason,
            entry.location.epoch,
            age,
        )
        return replace(entry.location, stale=True)

    def _apply_event(self, location: Location) -> None:
        current = self._entries.get(location.tenant_id)
        if current is not None and current.location.epoch >= location.epoch:
            return
        self._entries[location.tenant_id] = _Entry(location, None, time.monotonic())
        self._stats.events_applied += 1

    async def _follow(self, feed: EventFeed) -> None:
        """List, then follow the events from the listing's position; again each time the
        watch breaks. Stops for good if the platform publishes no NATS events."""
        while True:
            feed.broken.clear()
            subscription: Subscription | None = None
            try:
                await feed.connect()
                # Listing while NATS is away would only be done again once it is back.
                await feed.connected()
                sequence = await self._relist()
                if sequence is None:
                    _log.warning("tenant directory: the platform publishes no NATS events")
                    return
                subscription = await feed.follow(sequence + 1, self._apply_event)
                if not feed.broken.is_set():
                    self._watching = True
                    self._first_attempt.set()
                    _log.info("tenant directory: watching the events from %d", sequence + 1)
                    await feed.broken.wait()
                    _log.warning("tenant directory: the events watch broke; revalidating")
            except (Unreachable, DirectoryError, *NATS_FAILURES) as exc:
                _log.warning("tenant directory: cannot watch the events: %s", exc)
            except Exception:
                # Whatever else went wrong, the directory goes on revalidating and tries again.
                _log.exception("tenant directory: the events watch failed")
            finally:
                if self._watching:
                    self._watching = False
                    self._watched_until = time.monotonic()
                self._first_attempt.set()
                if subscription is not None:
                    with contextlib.suppress(*NATS_FAILURES):
                        await subscription.unsubscribe()
            await asyncio.sleep(self._retry_wait)

    async def _relist(self) -> int | None:
        """Fill the cache from the listing; its events position (None: no NATS events)."""
        assert self._api is not None
        listed_at = time.monotonic()
        listing = await self._api.listing(self._page_size)
        listed = {location.tenant_id for location in listing.locations}
        # What the listing lacks is gone (deleted while no watch ran), unless asked for since.
        for tenant_id, entry in list(self._entries.items()):
            if tenant_id not in listed and entry.checked_at < listed_at:
                del self._entries[tenant_id]
        for location in listing.locations:
            self._merge(location, None, listed_at)
        return listing.sequence
