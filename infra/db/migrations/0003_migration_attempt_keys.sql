-- Failed calls of one logical migration call (one idempotency key), so that only calls that
-- reached a service count against its attempts, not retries of the platform's own work.
-- depends: 0002_audit_trail

ALTER TABLE tenant_migrations
    ADD COLUMN attempt_key  text,
    ADD COLUMN key_failures integer NOT NULL DEFAULT 0 CHECK (key_failures >= 0);
