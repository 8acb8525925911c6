"""TenantSpec input validation and the Tenant wire shape (camelCase, derived fields)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tenancy.models import MigrationRecord, SlaTier, StorageMode, Tenant, TenantSpec
from tenancy.status import MigrationStatus, TenantStatus

WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def spec_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "acme",
        "name": "Acme Corp",
        "storageMode": "SCHEMA",
        "slaTier": "BASIC",
    }
    body.update(overrides)
    return body


def rejected_fields(body: dict[str, Any]) -> set[str]:
    """The top-level field names TenantSpec complains about."""
    with pytest.raises(ValidationError) as caught:
        TenantSpec.model_validate(body)
    return {str(error["loc"][0]) for error in caught.value.errors()}


def test_valid_camel_case_body_parses() -> None:
    spec = TenantSpec.model_validate(spec_body(storageMode="DATABASE", slaTier="PREMIUM"))

    assert spec.id == "acme"
    assert spec.name == "Acme Corp"
    assert spec.storage_mode is StorageMode.DATABASE
    assert spec.sla_tier is SlaTier.PREMIUM
    assert spec.model_dump(mode="json") == spec_body(storageMode="DATABASE", slaTier="PREMIUM")


@pytest.mark.parametrize(
    "tenant_id",
    [
        "abc",
        "a" * 40,
        "a12",
        "a__",
        "acme_corp_2024",
        "z" + "9" * 39,
    ],
)
def test_id_accepted(tenant_id: str) -> None:
    assert TenantSpec.model_validate(spec_body(id=tenant_id)).id == tenant_id


@pytest.mark.parametrize(
    "tenant_id",
    [
        pytest.param("", id="empty"),
        pytest.param("ab", id="2-chars"),
        pytest.param("a" * 41, id="41-chars"),
        pytest.param("Acme", id="uppercase-first"),
        pytest.param("acME", id="uppercase-inside"),
        pytest.param("1acme", id="leading-digit"),
        pytest.param("_acme", id="leading-underscore"),
        pytest.param("ac-me", id="hyphen"),
        pytest.param("ac.me", id="dot"),
        pytest.param("ac me", id="inner-space"),
        pytest.param("acmé", id="unicode-letter"),
        pytest.param("acme\u0661", id="unicode-digit"),
        pytest.param("\u0430cme", id="cyrillic-a"),
        pytest.param("acme; DROP TABLE tenants", id="sql-statement"),
        pytest.param("a'--", id="sql-comment"),
        pytest.param('x"y', id="double-quote"),
        pytest.param("acme\x00", id="nul"),
        pytest.param("acme\nfoo", id="inner-newline"),
    ],
)
def test_id_rejected(tenant_id: str) -> None:
    assert rejected_fields(spec_body(id=tenant_id)) == {"id"}


@pytest.mark.parametrize("tenant_id", [123, None, ["acme"], {"id": "acme"}])
def test_id_must_be_a_string(tenant_id: object) -> None:
    assert rejected_fields(spec_body(id=tenant_id)) == {"id"}


@pytest.mark.parametrize("tenant_id", [" acme", "acme ", "acme\n", "\tacme"])
def test_whitespace_around_id_is_rejected_not_trimmed(tenant_id: str) -> None:
    # An id names storage and a workflow: what the caller sent must be exactly what is used.
    assert rejected_fields(spec_body(id=tenant_id)) == {"id"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Acme  ", "Acme"),
        ("\tAcme Corp\n", "Acme Corp"),
        ("A", "A"),
        ("x" * 200, "x" * 200),
        ("  " + "x" * 200 + "  ", "x" * 200),
        ("Acme & Söhne GmbH", "Acme & Söhne GmbH"),
        ("株式会社アクメ", "株式会社アクメ"),
    ],
)
def test_name_trimmed_and_kept(raw: str, expected: str) -> None:
    assert TenantSpec.model_validate(spec_body(name=raw)).name == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("\t\n", id="only-control-whitespace"),
        pytest.param("x" * 201, id="201-chars"),
        pytest.param(" " + "x" * 201 + " ", id="201-chars-after-trim"),
        pytest.param("a\nb", id="inner-newline"),
        pytest.param("a\tb", id="inner-tab"),
        pytest.param("\x00", id="nul"),
        pytest.param("Acme\x1b[31m", id="ansi-escape"),
        pytest.param("Ac\u200bme", id="zero-width-space"),
        pytest.param(42, id="not-a-string"),
    ],
)
def test_name_rejected(name: object) -> None:
    assert rejected_fields(spec_body(name=name)) == {"name"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("storageMode", "schema"),
        ("storageMode", "TABLE"),
        ("storageMode", ""),
        ("storageMode", None),
        ("slaTier", "GOLD"),
        ("slaTier", "premium"),
        ("slaTier", 1),
    ],
)
def test_enum_outside_its_values_rejected_naming_the_alias(field: str, value: object) -> None:
    assert rejected_fields(spec_body(**{field: value})) == {field}


@pytest.mark.parametrize("extra", ["status", "jdbcUrl", "tenantId", "storage_mode"])
def test_unknown_fields_rejected(extra: str) -> None:
    assert rejected_fields(spec_body(**{extra: "x"})) == {extra}


def test_missing_fields_are_named_by_their_aliases() -> None:
    assert rejected_fields({}) == {"id", "name", "storageMode", "slaTier"}


def test_every_invalid_field_is_reported_at_once() -> None:
    body = spec_body(id="1", name="", storageMode="X", slaTier="Y")

    assert rejected_fields(body) == {"id", "name", "storageMode", "slaTier"}


def make_tenant(migrations: list[MigrationRecord]) -> Tenant:
    return Tenant(
        id="acme",
        name="Acme",
        storage_mode=StorageMode.SCHEMA,
        sla_tier=SlaTier.STANDARD,
        status=TenantStatus.MIGRATING,
        jdbc_url="jdbc:postgresql://db:5432/platform?currentSchema=tenant_acme",
        migrations=migrations,
        workflow_id="tenant-provision-acme",
        created_at=WHEN,
        updated_at=WHEN,
    )


def record(service: str, status: MigrationStatus, version: str | None) -> MigrationRecord:
    return MigrationRecord(service=service, status=status, version=version, updated_at=WHEN)


@pytest.mark.parametrize(
    ("migrations", "expected"),
    [
        ([], {}),
        ([record("backend-service", MigrationStatus.PENDING, None)], {}),
        (
            [
                record("backend-service", MigrationStatus.SUCCEEDED, "V3"),
                record("auth-service", MigrationStatus.FAILED, None),
                record("billing", MigrationStatus.RUNNING, "2"),
            ],
            {"backend-service": "V3", "billing": "2"},
        ),
    ],
)
def test_last_migration_version_skips_services_without_a_version(
    migrations: list[MigrationRecord], expected: dict[str, str]
) -> None:
    tenant = make_tenant(migrations)

    assert tenant.last_migration_version == expected
    assert tenant.model_dump(mode="json")["lastMigrationVersion"] == expected


def test_tenant_serializes_in_camel_case() -> None:
    tenant = make_tenant([record("backend-service", MigrationStatus.SUCCEEDED, "V1")])

    body = tenant.model_dump(mode="json")

    assert set(body) == {
        "id",
        "name",
        "storageMode",
        "slaTier",
        "status",
        "statusReason",
        "jdbcUrl",
        "storageServer",
        "migrations",
        "lastMigrationVersion",
        "workflowId",
        "workflowRunId",
        "createdBy",
        "createdAt",
        "updatedAt",
        "deletion",
        "move",
    }
    assert body["workflowId"] == "tenant-provision-acme"
    assert body["jdbcUrl"].endswith("?currentSchema=tenant_acme")
    assert body["storageMode"] == "SCHEMA"
    assert body["status"] == "MIGRATING"
    assert set(body["migrations"][0]) == {
        "service",
        "status",
        "version",
        "attempts",
        "lastError",
        "updatedAt",
    }
    assert datetime.fromisoformat(body["createdAt"]) == WHEN


def test_tenant_json_round_trips_despite_the_computed_field() -> None:
    # Activities hand Tenants across Temporal as JSON; the derived field must not break parsing.
    tenant = make_tenant([record("backend-service", MigrationStatus.SUCCEEDED, "V1")])

    assert Tenant.model_validate_json(tenant.model_dump_json()) == tenant
