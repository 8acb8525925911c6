-- Users who can sign in to the tenant.
-- DDL uses IF NOT EXISTS because yoyo records a migration in a separate transaction from the one
-- that applies it: after a crash between the two, the re-run must not fail.
CREATE TABLE IF NOT EXISTS users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at   TIMESTAMPTZ
);
