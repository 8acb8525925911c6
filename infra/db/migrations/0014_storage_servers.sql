-- Many storage servers: each tenant's row names the server its storage is on (placed before
-- the storage is created, never changed but by a move), and each configured server has a row
-- for what outlives a restart: its state (cordoned or not, and why) and its last check.
-- Tenants that exist already are on the one server every installation had: `default`.
-- depends: 0013_console_sign_outs

ALTER TABLE tenants ADD COLUMN storage_server text
    CHECK (storage_server ~ '^[a-z][a-z0-9-]{1,39}$');
UPDATE tenants SET storage_server = 'default';
-- A placement counts each server's tenants (every status but DELETED).
CREATE INDEX tenants_storage_server_idx ON tenants (storage_server) WHERE status <> 'DELETED';

CREATE TABLE storage_servers (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{1,39}$'),
    state            text NOT NULL DEFAULT 'ACTIVE' CHECK (state IN ('ACTIVE', 'CORDONED')),
    state_reason     text,
    state_changed_at timestamptz,
    state_changed_by text,
    -- The worker's periodic check (NULL until the first one).
    reachable        boolean,
    checked_at       timestamptz,
    server_version   text,
    check_error      text
);

CREATE TABLE storage_server_events (
    id          bigserial PRIMARY KEY,
    server      text NOT NULL REFERENCES storage_servers (name),
    type        text NOT NULL CHECK (type IN ('CORDONED', 'UNCORDONED')),
    actor       text NOT NULL,
    reason      text,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX storage_server_events_server_idx ON storage_server_events (server, id);
