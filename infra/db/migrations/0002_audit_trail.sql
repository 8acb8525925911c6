-- Who did what to a tenant, and every status transition, append-only.
-- depends: 0001_platform_metadata

ALTER TABLE tenants ADD COLUMN created_by text;

CREATE TABLE tenant_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED')),
    old_status  text,
    new_status  text,
    reason      text
);

CREATE INDEX tenant_events_tenant_idx ON tenant_events (tenant_id, id);
