ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED',
                      'DELETION_REQUESTED', 'DELETION_CANCELLED', 'BACKUP_TAKEN'));
DROP TABLE rollout_events;
DROP TABLE rollout_tenants;
DROP TABLE rollout_waves;
DROP TABLE rollouts;
