"""Dependencies routes receive: the long-lived resources built once in the app's lifespan."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from fastapi import Depends, Request
from temporalio.client import Client

from api.provisioning import ProvisioningGateway
from tenancy.repository import TenantRepository


class AppState(TypedDict):
    """What the lifespan yields; Starlette exposes it as `request.state`."""

    tenants: TenantRepository
    provisioning: ProvisioningGateway
    temporal: Client
    jwks: dict[str, Any]


def _tenants(request: Request) -> TenantRepository:
    tenants: TenantRepository = request.state.tenants
    return tenants


def _provisioning(request: Request) -> ProvisioningGateway:
    gateway: ProvisioningGateway = request.state.provisioning
    return gateway


def _temporal(request: Request) -> Client:
    client: Client = request.state.temporal
    return client


Tenants = Annotated[TenantRepository, Depends(_tenants)]
Provisioning = Annotated[ProvisioningGateway, Depends(_provisioning)]
TemporalClient = Annotated[Client, Depends(_temporal)]
