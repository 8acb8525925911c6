"""The worker registers its search attributes on a namespace that lacks them, once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from infra import search_attributes
from infra.temporal import ensure_search_attributes
from tests.support.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_registration_adds_the_missing_keywords_and_is_idempotent(
    temporal_client: Client,
) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    await temporal_client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace,
            workflow_execution_retention_period=Duration(
                seconds=int(timedelta(days=1).total_seconds())
            ),
        )
    )
    client = await Client.connect(
        temporal_client.service_client.config.target_host, namespace=namespace
    )
    names = sorted(key.name for key in search_attributes.ALL)

    async def register() -> list[str] | None:
        try:
            return await ensure_search_attributes(client)
        except RPCError:
            return None  # a new namespace takes a moment to be usable everywhere

    added = await eventually(register, lambda result: result is not None)
    assert sorted(added or []) == names
    assert await ensure_search_attributes(client) == []
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert {name: listed.custom_attributes[name] for name in names} == dict.fromkeys(names, keyword)
