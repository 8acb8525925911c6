"""Tenant ids and the names derived from them: workflow id, storage name, JDBC URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import (
    InvalidTenantId,
    check_tenant_id,
    provision_workflow_id,
    storage_location,
    storage_name,
)

VALID_IDS = ["abc", "a" * 40, "acme", "acme_corp", "a1_2"]
INVALID_IDS = [
    "",
    "ab",
    "a" * 41,
    "Acme",
    "1acme",
    "_acme",
    "ac-me",
    "acmé",
    "acme; DROP TABLE tenants",
    "a'--",
    'x"y',
    "acme\n",
    " acme",
    "acme\x00",
    "../etc",
]


@pytest.mark.parametrize("tenant_id", VALID_IDS)
def test_valid_ids_pass_unchanged(tenant_id: str) -> None:
    assert check_tenant_id(tenant_id) == tenant_id
    assert provision_workflow_id(tenant_id) == f"tenant-provision-{tenant_id}"
    assert storage_name(tenant_id) == f"tenant_{tenant_id}"


@pytest.mark.parametrize("tenant_id", INVALID_IDS)
@pytest.mark.parametrize("derive", [check_tenant_id, provision_workflow_id, storage_name])
def test_invalid_ids_raise(derive, tenant_id: str) -> None:
    with pytest.raises(InvalidTenantId):
        derive(tenant_id)


@pytest.mark.parametrize("mode", list(StorageMode))
@pytest.mark.parametrize("tenant_id", ["Acme", "a'--", "x"])
def test_storage_location_refuses_invalid_ids(mode: StorageMode, tenant_id: str) -> None:
    with pytest.raises(InvalidTenantId):
        storage_location("postgresql://db/platform", mode, tenant_id)


def test_invalid_tenant_id_is_a_value_error() -> None:
    assert issubclass(InvalidTenantId, ValueError)


@pytest.mark.parametrize("tenant_id", [i for i in VALID_IDS + INVALID_IDS if i.strip() == i])
def test_naming_and_model_agree_on_ids(tenant_id: str) -> None:
    # Two regex engines (Python's re here, pydantic-core's in the model) read one pattern.
    body = {"id": tenant_id, "name": "Acme", "storageMode": "SCHEMA", "slaTier": "BASIC"}
    try:
        TenantSpec.model_validate(body)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    try:
        check_tenant_id(tenant_id)
        naming_accepts = True
    except InvalidTenantId:
        naming_accepts = False

    assert model_accepts is naming_accepts


@pytest.mark.parametrize(
    ("server_url", "database", "jdbc_url"),
    [
        (
            "postgresql://db.internal:6543/platform",
            "platform",
            "jdbc:postgresql://db.internal:6543/platform?currentSchema=tenant_acme",
        ),
        (
            "postgresql://db.internal/platform",
            "platform",
            "jdbc:postgresql://db.internal:5432/platform?currentSchema=tenant_acme",
        ),
        (
            "postgresql://db.internal:5432/tenants?sslmode=require",
            "tenants",
            "jdbc:postgresql://db.internal:5432/tenants?currentSchema=tenant_acme",
        ),
        (
            "postgresql://[::1]:5433/platform",
            "platform",
            "jdbc:postgresql://[::1]:5433/platform?currentSchema=tenant_acme",
        ),
        (
            "postgresql://svc@[2001:db8::5]/platform",
            "platform",
            "jdbc:postgresql://[2001:db8::5]:5432/platform?currentSchema=tenant_acme",
        ),
    ],
)
def test_schema_mode_uses_the_servers_database(
    server_url: str, database: str, jdbc_url: str
) -> None:
    location = storage_location(server_url, StorageMode.SCHEMA, "acme")

    assert location.mode is StorageMode.SCHEMA
    assert location.database == database
    assert location.schema_name == "tenant_acme"
    assert location.jdbc_url == jdbc_url


@pytest.mark.parametrize(
    ("server_url", "jdbc_url"),
    [
        (
            "postgresql://db.internal:6543/platform",
            "jdbc:postgresql://db.internal:6543/tenant_acme",
        ),
        ("postgresql://db.internal", "jdbc:postgresql://db.internal:5432/tenant_acme"),
        ("postgresql://[::1]/platform", "jdbc:postgresql://[::1]:5432/tenant_acme"),
    ],
)
def test_database_mode_gets_its_own_database(server_url: str, jdbc_url: str) -> None:
    location = storage_location(server_url, StorageMode.DATABASE, "acme")

    assert location.mode is StorageMode.DATABASE
    assert location.database == "tenant_acme"
    assert location.schema_name == "public"
    assert location.jdbc_url == jdbc_url


@pytest.mark.parametrize("mode", list(StorageMode))
@pytest.mark.parametrize(
    "server_url",
    [
        "postgresql://admin_user:s3cr3t-Pw@db.internal:5432/platform",
        "postgres://admin_user:s3cr3t-Pw@db.internal/platform?sslmode=require",
        "postgresql://admin_user:s3cr3t-Pw@[::1]:5432/platform",
        "postgresql://admin_user@db.internal/platform?password=s3cr3t-Pw",
    ],
)
def test_jdbc_url_never_carries_credentials(server_url: str, mode: StorageMode) -> None:
    location = storage_location(server_url, mode, "acme")
    wire = location.model_dump_json()

    assert "s3cr3t-Pw" not in wire
    assert "admin_user" not in wire
    assert "@" not in location.jdbc_url
    assert location.jdbc_url.startswith("jdbc:postgresql://")


@pytest.mark.parametrize("mode", list(StorageMode))
def test_location_serializes_with_contract_keys(mode: StorageMode) -> None:
    body = storage_location("postgresql://db/platform", mode, "acme").model_dump(mode="json")

    assert set(body) == {"mode", "database", "schema", "jdbcUrl"}
    assert body["mode"] == mode.value


def test_schema_mode_database_name_is_percent_decoded() -> None:
    location = storage_location(
        "postgresql://db.internal/tenant%20data", StorageMode.SCHEMA, "acme"
    )

    assert location.database == "tenant data"
