-- Event-driven migrations: one row per logical command (a migrate or teardown call to a
-- service with transport events, under one idempotency key), so a reply that comes back on
-- the bus finds what waits for it, and a reply that outlives its wait is kept for the next try.
-- depends: 0009_lifecycle_outbox

CREATE TABLE downstream_commands (
    command_id      text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('MigrateTenant', 'TeardownTenant')),
    tenant_id       text NOT NULL,
    service         text NOT NULL,
    idempotency_key text NOT NULL,
    -- Failed calls after which a migration fails for good (NULL: the retry policy decides).
    max_attempts    integer,
    -- The newest send, and the Temporal task token of the activity attempt that waits for its
    -- reply (NULL: a rollout batch waits in its own process, reading this row).
    attempt         integer NOT NULL DEFAULT 0,
    task_token      bytea,
    sent_at         timestamptz,
    -- The last reply taken: `succeeded` and `rejected` are final, `failed` answers one attempt.
    outcome         text CHECK (outcome IN ('succeeded', 'failed', 'rejected')),
    outcome_attempt integer,
    version         text,
    reason          text,
    replied_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX downstream_commands_tenant_idx ON downstream_commands (tenant_id);
