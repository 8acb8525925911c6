-- Tenant moves: status MOVING, the move on the tenant's row while it lasts (all NULL when no
-- move), the move's audit actions, and the frozen sources kept after a switch until they are
-- dropped (the reconciler must not call them orphans).
-- depends: 0016_outbox_notify

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN (
    'PROVISIONING', 'MIGRATING', 'ACTIVE', 'PROVISION_ERROR', 'MIGRATION_ERROR',
    'DELETION_SCHEDULED', 'DELETING', 'DELETION_ERROR', 'DELETED', 'MOVING'));

ALTER TABLE tenants
    ADD COLUMN move_requested_at timestamptz,
    ADD COLUMN move_requested_by text,
    ADD COLUMN move_reason       text,
    ADD COLUMN move_from_server  text,
    ADD COLUMN move_to_server    text,
    ADD COLUMN move_phase        text CHECK (move_phase IN
        ('PREPARING', 'FROZEN', 'COPYING', 'VERIFYING', 'SWITCHED'));

ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED',
                      'DELETION_REQUESTED', 'DELETION_CANCELLED', 'BACKUP_TAKEN',
                      'VERSION_CHANGED', 'MOVE_REQUESTED', 'TENANT_MOVED', 'MOVE_FAILED',
                      'MOVE_CANCELLED', 'TENANT_UPDATED'));

CREATE TABLE retained_storage (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    server      text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('SCHEMA', 'DATABASE')),
    database    text NOT NULL,
    schema_name text NOT NULL,
    retained_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    drop_after  timestamptz NOT NULL,
    dropped_at  timestamptz
);
CREATE INDEX retained_storage_due_idx ON retained_storage (drop_after) WHERE dropped_at IS NULL;
