"""What every call to a downstream service's internal endpoints shares (migrate, teardown):
the signed request with its idempotency key, the storage body, and what an answer means."""

from __future__ import annotations

import asyncio
from enum import Enum

import httpx

from infra.security.signing import CallSigner
from infra.telemetry.logging import redact
from tenancy.failures import summarize
from tenancy.models import StorageLocation
from tenancy.settings import DownstreamService

IDEMPOTENCY_HEADER = "Idempotency-Key"


class Outcome(Enum):
    """What an HTTP status from a downstream service means for the call."""

    SUCCESS = "success"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


def classify_status(status_code: int) -> Outcome:
    """2xx succeeds; 408, 429 and 5xx are worth retrying; any other answer is final."""
    if 200 <= status_code < 300:
        return Outcome.SUCCESS
    if status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRYABLE
    return Outcome.REJECTED


def answer_reason(response: httpx.Response) -> str:
    """The service's own explanation if it gave one, trimmed to a line, secrets masked (a
    service may echo the request, bearer token included)."""
    detail: object = None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error") or body
    else:
        detail = body
    text = detail if isinstance(detail, str) else str(detail)
    return summarize(
        redact(f"HTTP {response.status_code}: {text}") if text else f"HTTP {response.status_code}"
    )


def storage_body(tenant_id: str, location: StorageLocation) -> dict[str, str]:
    """The JSON body of every internal call: where the tenant's storage is."""
    return {
        "tenantId": tenant_id,
        "storageMode": location.mode.value,
        "jdbcUrl": location.jdbc_url,
        "schema": location.schema_name,
        "database": location.database,
    }


class Unreachable(Exception):
    """The call got no answer: a timeout or a transport error (worth retrying)."""


async def signed_call(
    http: httpx.AsyncClient,
    signer: CallSigner,
    service: DownstreamService,
    method: str,
    path: str,
    *,
    tenant_id: str,
    location: StorageLocation,
    idempotency_key: str,
    timeout: float,
) -> httpx.Response:
    """Send one signed call with the storage body; `Unreachable` when there is no answer."""
    url = f"{str(service.base_url).rstrip('/')}{path}"
    try:
        # httpx's timeout bounds each phase (connect, each read); this bounds the whole
        # call, so a service that answers byte by byte is cut off too.
        async with asyncio.timeout(timeout):
            return await http.request(
                method,
                url,
                json=storage_body(tenant_id, location),
                headers={
                    IDEMPOTENCY_HEADER: idempotency_key,
                    # A new token per attempt: its `jti` is single-use at the service.
                    "Authorization": "Bearer "
                    + signer.token(audience=service.name, tenant_id=tenant_id),
                },
                timeout=timeout,
            )
    except (httpx.TimeoutException, TimeoutError):
        raise Unreachable(f"no answer within {timeout}s") from None
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach {service.name}: {type(exc).__name__}") from None
