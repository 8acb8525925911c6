"""Dependencies routes receive: the long-lived resources built once in the app's lifespan, and
the authenticated principal with the scope an operation needs."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.auth import (
    ALL_SCOPES,
    DELETE_SCOPE,
    DIRECTORY_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    SERVERS_WRITE_SCOPE,
    WRITE_SCOPE,
    Principal,
    TokenVerifier,
)
from api.errors import Forbidden, Unauthorized
from api.gateway import WorkflowGateway
from infra.db.console_sessions import ConsoleSignOuts
from infra.db.deletions import DeletionRepository
from infra.db.directory import DirectoryRepository
from infra.db.drains import DrainRepository
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.db.servers import ServerRepository
from infra.db.services import ServiceVersions
from infra.db.tenant_moves import MoveRepository
from infra.events.nats import BusProbe, StreamPosition
from tenancy.settings import Settings


class AppState(TypedDict):
    """What the lifespan yields; Starlette exposes it as `request.state`."""

    tenants: TenantRepository
    deletions: DeletionRepository
    moves: MoveRepository
    drains: DrainRepository
    rollouts: RolloutRepository
    service_versions: ServiceVersions
    servers: ServerRepository
    settings: Settings
    workflows: WorkflowGateway
    temporal: Client
    jwks: dict[str, Any]
    verifier: TokenVerifier
    max_body_bytes: int
    console_sign_outs: ConsoleSignOuts
    # The command bus's readiness check; None when no service has transport events.
    command_bus: BusProbe | None
    directory: DirectoryRepository
    # The lifecycle stream's position for the directory's listing; None without NATS.
    events_position: StreamPosition | None


# Declares the scheme in OpenAPI (the Authorize button of /docs); missing or non-Bearer
# credentials come back as None so the 401 is rendered as a problem with its challenge.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description=(
        "A JWT from the identity provider with the scopes its operations need: "
        + ", ".join(f"`{scope}`" for scope in ALL_SCOPES)
        + "; `make token` mints one for development."
    ),
)


# Dependencies are coroutines, even those that await nothing: FastAPI runs a plain function
# on its thread pool, a hop to a thread and back on every request.
async def _tenants(request: Request) -> TenantRepository:
    tenants: TenantRepository = request.state.tenants
    return tenants


async def _moves(request: Request) -> MoveRepository:
    moves: MoveRepository = request.state.moves
    return moves


async def _drains(request: Request) -> DrainRepository:
    drains: DrainRepository = request.state.drains
    return drains


async def _rollouts(request: Request) -> RolloutRepository:
    rollouts: RolloutRepository = request.state.rollouts
    return rollouts


async def _deletions(request: Request) -> DeletionRepository:
    deletions: DeletionRepository = request.state.deletions
    return deletions


async def _service_versions(request: Request) -> ServiceVersions:
    service_versions: ServiceVersions = request.state.service_versions
    return service_versions


async def _servers(request: Request) -> ServerRepository:
    servers: ServerRepository = request.state.servers
    return servers


async def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def _workflows(request: Request) -> WorkflowGateway:
    gateway: WorkflowGateway = request.state.workflows
    return gateway


async def _command_bus(request: Request) -> BusProbe | None:
    probe: BusProbe | None = request.state.command_bus
    return probe


async def _directory(request: Request) -> DirectoryRepository:
    directory: DirectoryRepository = request.state.directory
    return directory


async def _events_position(request: Request) -> StreamPosition | None:
    position: StreamPosition | None = request.state.events_position
    return position


async def _temporal(request: Request) -> Client:
    client: Client = request.state.temporal
    return client


async def authenticate(request: Request) -> Principal:
    """The caller's principal, verified once per request: the route guard (api.guard) calls
    this before the body is read, and the dependencies then find it done."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    credentials = await _bearer(request)
    if credentials is None:
        raise Unauthorized("a bearer token is required", token_presented=False)
    verifier: TokenVerifier = request.state.verifier
    principal = await verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


async def _principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(request)


class ScopeCheck:
    """A dependency giving the caller's principal, or 403 unless its token grants `scope` (or
    one of the `alternatives`).

    A class rather than a closure so that the route guard can find the scope a route needs.
    """

    def __init__(self, scope: str, *alternatives: str) -> None:
        self.scope = scope
        self._named = " or ".join((scope, *alternatives))
        self.accepted = frozenset((scope, *alternatives))

    def check(self, principal: Principal) -> Principal:
        """`principal`, or Forbidden unless it holds one of the accepted scopes."""
        if self.accepted.isdisjoint(principal.scopes):
            raise Forbidden(f"this operation needs the {self._named} scope", scope=self.scope)
        return principal

    async def __call__(self, principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        return self.check(principal)


def require_scope(scope: str, *alternatives: str) -> ScopeCheck:
    """A dependency giving the caller's principal, or 403 unless its token grants `scope` (or
    one of the `alternatives`)."""
    return ScopeCheck(scope, *alternatives)


Tenants = Annotated[TenantRepository, Depends(_tenants)]
Workflows = Annotated[WorkflowGateway, Depends(_workflows)]
TemporalClient = Annotated[Client, Depends(_temporal)]
Directory = Annotated[DirectoryRepository, Depends(_directory)]
EventsPositions = Annotated[StreamPosition | None, Depends(_events_position)]
CommandBusProbe = Annotated[BusProbe | None, Depends(_command_bus)]
Reader = Annotated[Principal, Depends(require_scope(READ_SCOPE))]
Writer = Annotated[Principal, Depends(require_scope(WRITE_SCOPE))]
Deleter = Annotated[Principal, Depends(require_scope(DELETE_SCOPE))]
RolloutWriter = Annotated[Principal, Depends(require_scope(ROLLOUTS_WRITE_SCOPE))]
RolloutReader = Annotated[Principal, Depends(require_scope(ROLLOUTS_READ_SCOPE))]
ServerWriter = Annotated[Principal, Depends(require_scope(SERVERS_WRITE_SCOPE))]
# The directory's reads: a service's directory:read, or an operator's tenants:read.
DirectoryReader = Annotated[Principal, Depends(require_scope(DIRECTORY_SCOPE, READ_SCOPE))]
Deletions = Annotated[DeletionRepository, Depends(_deletions)]
Moves = Annotated[MoveRepository, Depends(_moves)]
Drains = Annotated[DrainRepository, Depends(_drains)]
Rollouts = Annotated[RolloutRepository, Depends(_rollouts)]
ServiceVersionReader = Annotated[ServiceVersions, Depends(_service_versions)]
Servers = Annotated[ServerRepository, Depends(_servers)]
Config = Annotated[Settings, Depends(_settings)]
