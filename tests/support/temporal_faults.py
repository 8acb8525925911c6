"""Faults and probes injected at a Temporal client with an interceptor (no patched functions): a
start the server accepted whose answer is lost, a start that never reaches the server, and a
signal that a workflow was described (so a test acts while the caller waits)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowExecutionDescription,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode


class LostStarts(Interceptor):
    """Every `start_workflow` raises `RPCError` (`status`, UNAVAILABLE unless told); with
    `reach_server` the start is sent first and accepted, as when a connection drops after the
    server took the request."""

    def __init__(
        self, *, reach_server: bool, status: RPCStatusCode = RPCStatusCode.UNAVAILABLE
    ) -> None:
        self.reach_server = reach_server
        self.status = status
        self.starts = 0

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _LostStart(next, self)


class _LostStart(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, fault: LostStarts) -> None:
        super().__init__(next)
        self._fault = fault

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self._fault.starts += 1
        if self._fault.reach_server:
            await super().start_workflow(input)
        raise RPCError("injected: the answer to the start was lost", self._fault.status, b"")


class UnansweredStarts(Interceptor):
    """Every `start_workflow` waits for ever without reaching the server, as a request the
    server has not answered yet (the caller gives up on it)."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _UnansweredStart(next)


class _UnansweredStart(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Describes(Interceptor):
    """Sets `described` once a `describe` of a workflow has been answered."""

    def __init__(self) -> None:
        self.described = asyncio.Event()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Describes(next, self)


class _Describes(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, probe: Describes) -> None:
        super().__init__(next)
        self._probe = probe

    async def describe_workflow(self, input: DescribeWorkflowInput) -> WorkflowExecutionDescription:
        description = await super().describe_workflow(input)
        self._probe.described.set()
        return description


def client_with(client: Client, *interceptors: Interceptor) -> Client:
    """A client of the same server, namespace and converter, through `interceptors`."""
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=client.data_converter,
        interceptors=interceptors,
    )
