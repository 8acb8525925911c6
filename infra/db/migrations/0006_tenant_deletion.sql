-- Offboarding: deletion statuses, the deletion request on the tenant row (a DELETED row stays as
-- a tombstone, so an id is never reused), the backup taken and the services torn down so far
-- (a resumed deletion skips them), and the deletion's audit actions.
-- depends: 0005_run_adoption

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN (
    'PROVISIONING', 'MIGRATING', 'ACTIVE', 'PROVISION_ERROR', 'MIGRATION_ERROR',
    'DELETION_SCHEDULED', 'DELETING', 'DELETION_ERROR', 'DELETED'));

ALTER TABLE tenants
    ADD COLUMN deletion_requested_at   timestamptz,
    ADD COLUMN deletion_requested_by   text,
    ADD COLUMN deletion_reason         text,
    ADD COLUMN deletion_purge_at       timestamptz,
    -- Where restore takes the tenant back to.
    ADD COLUMN deletion_previous_status text,
    -- {"path", "sizeBytes", "sha256"} once the backup of this deletion is on disk.
    ADD COLUMN deletion_backup         jsonb,
    ADD COLUMN deletion_torn_down      text[] NOT NULL DEFAULT '{}';

ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED',
                      'DELETION_REQUESTED', 'DELETION_CANCELLED', 'BACKUP_TAKEN'));
