-- Server drains: states DRAINING (its tenants are being moved off, it takes no new one) and
-- DRAINED (it holds no tenant), the drain's progress on the server's row (written by
-- DrainServerWorkflow's activities as its moves end) and the drain's audit events.
-- depends: 0017_tenant_moves

ALTER TABLE storage_servers DROP CONSTRAINT storage_servers_state_check;
ALTER TABLE storage_servers ADD CONSTRAINT storage_servers_state_check
    CHECK (state IN ('ACTIVE', 'CORDONED', 'DRAINING', 'DRAINED'));

-- The last drain's (NULL: never drained). drain_ended_at is set when its run ended and left
-- the server DRAINING with tenants on it: a new drain request then starts it again.
ALTER TABLE storage_servers
    ADD COLUMN drain_started_at  timestamptz,
    ADD COLUMN drain_ended_at    timestamptz,
    ADD COLUMN drain_reason      text,
    ADD COLUMN drain_concurrency integer CHECK (drain_concurrency BETWEEN 1 AND 32),
    ADD COLUMN drain_total       integer NOT NULL DEFAULT 0 CHECK (drain_total >= 0),
    ADD COLUMN drain_moved       integer NOT NULL DEFAULT 0 CHECK (drain_moved >= 0),
    ADD COLUMN drain_failed      integer NOT NULL DEFAULT 0 CHECK (drain_failed >= 0),
    ADD COLUMN drain_running     integer NOT NULL DEFAULT 0 CHECK (drain_running >= 0),
    -- [{"tenantId": ..., "reason": ...}] of the tenants the drain could not move.
    ADD COLUMN drain_failures    jsonb NOT NULL DEFAULT '[]';

ALTER TABLE storage_server_events DROP CONSTRAINT storage_server_events_type_check;
ALTER TABLE storage_server_events ADD CONSTRAINT storage_server_events_type_check
    CHECK (type IN ('CORDONED', 'UNCORDONED', 'DRAIN_STARTED', 'DRAIN_CANCELLED',
                    'DRAIN_STOPPED', 'DRAINED'));
