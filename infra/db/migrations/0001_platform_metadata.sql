-- Platform metadata: one row per tenant, one row per (tenant, downstream service).
-- depends:

CREATE TABLE tenants (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{2,39}$'),
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    storage_mode    text NOT NULL CHECK (storage_mode IN ('SCHEMA', 'DATABASE')),
    sla_tier        text NOT NULL CHECK (sla_tier IN ('BASIC', 'STANDARD', 'PREMIUM')),
    status          text NOT NULL CHECK (status IN
                        ('PROVISIONING', 'MIGRATING', 'ACTIVE', 'PROVISION_ERROR', 'MIGRATION_ERROR')),
    status_reason   text,
    jdbc_url        text,
    workflow_id     text NOT NULL,
    workflow_run_id text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Keyset pagination, oldest first, optionally within one status or tier.
CREATE INDEX tenants_created_idx ON tenants (created_at, id);
CREATE INDEX tenants_status_created_idx ON tenants (status, created_at, id);
CREATE INDEX tenants_tier_created_idx ON tenants (sla_tier, created_at, id);

CREATE TABLE tenant_migrations (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service    text NOT NULL,
    status     text NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED')),
    version    text,
    attempts   integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, service)
);
