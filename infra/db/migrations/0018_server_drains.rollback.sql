-- A server draining or drained is left cordoned: it takes no new tenant, keeps its own.
UPDATE storage_servers SET state = 'CORDONED' WHERE state IN ('DRAINING', 'DRAINED');

-- The audit trail keeps the drains it recorded; the older constraint holds for new rows.
ALTER TABLE storage_server_events DROP CONSTRAINT storage_server_events_type_check;
ALTER TABLE storage_server_events ADD CONSTRAINT storage_server_events_type_check
    CHECK (type IN ('CORDONED', 'UNCORDONED')) NOT VALID;

ALTER TABLE storage_servers
    DROP COLUMN drain_started_at,
    DROP COLUMN drain_ended_at,
    DROP COLUMN drain_reason,
    DROP COLUMN drain_concurrency,
    DROP COLUMN drain_total,
    DROP COLUMN drain_moved,
    DROP COLUMN drain_failed,
    DROP COLUMN drain_running,
    DROP COLUMN drain_failures;

ALTER TABLE storage_servers DROP CONSTRAINT storage_servers_state_check;
ALTER TABLE storage_servers ADD CONSTRAINT storage_servers_state_check
    CHECK (state IN ('ACTIVE', 'CORDONED'));
