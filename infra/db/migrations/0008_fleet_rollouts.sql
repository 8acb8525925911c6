-- Fleet rollouts: a rollout, its waves and one row per tenant it takes, materialised at start in
-- a stable order, so no workflow payload ever holds the fleet; its audit trail; and a tenant event
-- for each version a rollout applies.
-- depends: 0007_event_keys

CREATE TABLE rollouts (
    id            text PRIMARY KEY,
    status        text NOT NULL CHECK (status IN
                      ('RUNNING', 'PAUSED', 'HALTED', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    status_reason text,
    services      text[] NOT NULL,
    request       jsonb NOT NULL,
    created_by    text NOT NULL,
    pass          integer NOT NULL DEFAULT 1 CHECK (pass >= 1),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rollouts_status_created_idx ON rollouts (status, created_at, id);

CREATE TABLE rollout_waves (
    rollout_id text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    position   integer NOT NULL CHECK (position >= 0),
    name       text NOT NULL,
    status     text NOT NULL CHECK (status IN
                   ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    PRIMARY KEY (rollout_id, position)
);

CREATE TABLE rollout_tenants (
    rollout_id text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    wave       integer NOT NULL,
    position   bigint NOT NULL,
    status     text NOT NULL CHECK (status IN
                   ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED')),
    -- The pass that last ran it (retry-failed starts a new pass over the failed rows), and the
    -- batch that claimed it, so a retried batch takes back its own rows.
    pass       integer NOT NULL DEFAULT 1,
    batch      bigint,
    service    text,
    error      text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (rollout_id, tenant_id)
);
CREATE INDEX rollout_tenants_wave_idx ON rollout_tenants (rollout_id, wave, status, position);

CREATE TABLE rollout_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id  text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('ROLLOUT_STARTED', 'ROLLOUT_PAUSED',
                    'ROLLOUT_RESUMED', 'ROLLOUT_HALTED', 'ROLLOUT_CANCELLED', 'ROLLOUT_FINISHED',
                    'ROLLOUT_RETRIED')),
    reason      text
);
CREATE INDEX rollout_events_rollout_idx ON rollout_events (rollout_id, id);

ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED',
                      'DELETION_REQUESTED', 'DELETION_CANCELLED', 'BACKUP_TAKEN',
                      'VERSION_CHANGED'));
