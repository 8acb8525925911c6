"""Dependencies routes receive: the long-lived resources built once in the app's lifespan, and
the authenticated principal with the scope an operation needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.auth import READ_SCOPE, WRITE_SCOPE, Principal, TokenVerifier
from api.errors import Forbidden, Unauthorized
from api.provisioning import ProvisioningGateway
from tenancy.repository import TenantRepository


class AppState(TypedDict):
    """What the lifespan yields; Starlette exposes it as `request.state`."""

    tenants: TenantRepository
    provisioning: ProvisioningGateway
    temporal: Client
    jwks: dict[str, Any]
    verifier: TokenVerifier


# Declares the scheme in OpenAPI (the Authorize button of /docs); missing or non-Bearer
# credentials come back as None so the 401 is rendered as a problem with its challenge.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description=(
        f"A JWT from the identity provider with scope `{READ_SCOPE}` and/or `{WRITE_SCOPE}`; "
        "`make token` mints one for development."
    ),
)


def _tenants(request: Request) -> TenantRepository:
    tenants: TenantRepository = request.state.tenants
    return tenants


def _provisioning(request: Request) -> ProvisioningGateway:
    gateway: ProvisioningGateway = request.state.provisioning
    return gateway


def _temporal(request: Request) -> Client:
    client: Client = request.state.temporal
    return client


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("a bearer token is required", token_presented=False)
    verifier: TokenVerifier = request.state.verifier
    return await verifier.verify(credentials.credentials)


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller's principal, or 403 unless its token grants `scope`."""

    async def has_scope(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"this operation needs the {scope} scope", scope=scope)
        return principal

    return has_scope


Tenants = Annotated[TenantRepository, Depends(_tenants)]
Provisioning = Annotated[ProvisioningGateway, Depends(_provisioning)]
TemporalClient = Annotated[Client, Depends(_temporal)]
Reader = Annotated[Principal, Depends(require_scope(READ_SCOPE))]
Writer = Annotated[Principal, Depends(require_scope(WRITE_SCOPE))]
