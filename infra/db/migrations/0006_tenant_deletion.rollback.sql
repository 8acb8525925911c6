ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED'));

ALTER TABLE tenants
    DROP COLUMN deletion_requested_at,
    DROP COLUMN deletion_requested_by,
    DROP COLUMN deletion_reason,
    DROP COLUMN deletion_purge_at,
    DROP COLUMN deletion_previous_status,
    DROP COLUMN deletion_backup,
    DROP COLUMN deletion_torn_down;

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN
    ('PROVISIONING', 'MIGRATING', 'ACTIVE', 'PROVISION_ERROR', 'MIGRATION_ERROR'));
