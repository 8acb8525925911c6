DROP TABLE retained_storage;

-- A move in flight is abandoned where its row stands: on its source server.
UPDATE tenants SET status = 'ACTIVE' WHERE status = 'MOVING';

-- The audit trail keeps the moves it recorded; the older constraint holds for new rows.
ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED',
                      'DELETION_REQUESTED', 'DELETION_CANCELLED', 'BACKUP_TAKEN',
                      'VERSION_CHANGED')) NOT VALID;

ALTER TABLE tenants
    DROP COLUMN move_requested_at,
    DROP COLUMN move_requested_by,
    DROP COLUMN move_reason,
    DROP COLUMN move_from_server,
    DROP COLUMN move_to_server,
    DROP COLUMN move_phase;

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN (
    'PROVISIONING', 'MIGRATING', 'ACTIVE', 'PROVISION_ERROR', 'MIGRATION_ERROR',
    'DELETION_SCHEDULED', 'DELETING', 'DELETION_ERROR', 'DELETED'));
