-- Rollout lists read cheaply: each wave's tenants by status are kept in `rollout_wave_counts` by
-- statement triggers on `rollout_tenants`, in the same transaction as every status change, and
-- each rollout's request has a stored summary (its tenant-id lists replaced by their counts), so
-- a page of rollouts is one query that neither groups tenants nor reads whole requests.
-- depends: 0010_downstream_commands

-- Workers still running batches write `rollout_tenants` while this migration runs: held until
-- the triggers exist (the migration is one transaction), so no change falls between the
-- backfill below and the triggers that follow it.
LOCK TABLE rollout_tenants IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE rollout_wave_counts (
    rollout_id text NOT NULL,
    wave       integer NOT NULL,
    pending    bigint NOT NULL DEFAULT 0,
    running    bigint NOT NULL DEFAULT 0,
    succeeded  bigint NOT NULL DEFAULT 0,
    failed     bigint NOT NULL DEFAULT 0,
    skipped    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, wave),
    FOREIGN KEY (rollout_id, wave) REFERENCES rollout_waves (rollout_id, position)
        ON DELETE CASCADE
);

INSERT INTO rollout_wave_counts (rollout_id, wave, pending, running, succeeded, failed, skipped)
SELECT rollout_id, wave,
       count(*) FILTER (WHERE status = 'PENDING'),
       count(*) FILTER (WHERE status = 'RUNNING'),
       count(*) FILTER (WHERE status = 'SUCCEEDED'),
       count(*) FILTER (WHERE status = 'FAILED'),
       count(*) FILTER (WHERE status = 'SKIPPED')
FROM rollout_tenants GROUP BY rollout_id, wave;

-- Adds (sign 1) or takes away (sign -1) a group of tenants from a wave's counts. Only an
-- addition creates the counts: tenants deleted with their rollout find its counts gone.
CREATE FUNCTION rollout_wave_counts_add(
    counted_rollout text, counted_wave integer, sign integer,
    add_pending bigint, add_running bigint, add_succeeded bigint, add_failed bigint,
    add_skipped bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF sign > 0 THEN
        INSERT INTO rollout_wave_counts AS c
            (rollout_id, wave, pending, running, succeeded, failed, skipped)
        VALUES (counted_rollout, counted_wave, add_pending, add_running, add_succeeded,
                add_failed, add_skipped)
        ON CONFLICT (rollout_id, wave) DO UPDATE SET
            pending = c.pending + EXCLUDED.pending,
            running = c.running + EXCLUDED.running,
            succeeded = c.succeeded + EXCLUDED.succeeded,
            failed = c.failed + EXCLUDED.failed,
            skipped = c.skipped + EXCLUDED.skipped;
    ELSE
        UPDATE rollout_wave_counts SET
            pending = pending - add_pending,
            running = running - add_running,
            succeeded = succeeded - add_succeeded,
            failed = failed - add_failed,
            skipped = skipped - add_skipped
        WHERE rollout_id = counted_rollout AND wave = counted_wave;
    END IF;
END
$$;

-- One statement on `rollout_tenants` moves the counts of the waves it touched, in its own
-- transaction: the new rows' statuses are added, the old rows' taken away (waves in order).
CREATE FUNCTION rollout_wave_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM rollout_wave_counts_add(rollout_id, wave, 1, pending, running, succeeded,
                                        failed, skipped)
        FROM (
            SELECT rollout_id, wave,
                   count(*) FILTER (WHERE status = 'PENDING') AS pending,
                   count(*) FILTER (WHERE status = 'RUNNING') AS running,
                   count(*) FILTER (WHERE status = 'SUCCEEDED') AS succeeded,
                   count(*) FILTER (WHERE status = 'FAILED') AS failed,
                   count(*) FILTER (WHERE status = 'SKIPPED') AS skipped
            FROM new_rows GROUP BY rollout_id, wave ORDER BY rollout_id, wave
        ) added;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM rollout_wave_counts_add(rollout_id, wave, -1, pending, running, succeeded,
                                        failed, skipped)
        FROM (
            SELECT rollout_id, wave,
                   count(*) FILTER (WHERE status = 'PENDING') AS pending,
                   count(*) FILTER (WHERE status = 'RUNNING') AS running,
                   count(*) FILTER (WHERE status = 'SUCCEEDED') AS succeeded,
                   count(*) FILTER (WHERE status = 'FAILED') AS failed,
                   count(*) FILTER (WHERE status = 'SKIPPED') AS skipped
            FROM old_rows GROUP BY rollout_id, wave ORDER BY rollout_id, wave
        ) removed;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER rollout_tenants_counted_insert AFTER INSERT ON rollout_tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollout_wave_counts_follow();
CREATE TRIGGER rollout_tenants_counted_update AFTER UPDATE ON rollout_tenants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollout_wave_counts_follow();
CREATE TRIGGER rollout_tenants_counted_delete AFTER DELETE ON rollout_tenants
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollout_wave_counts_follow();

-- What a list shows of a request: everything but its tenant-id lists, which become counts
-- (`tenantIdCount`, null when the request named no ids).
CREATE FUNCTION rollout_request_summary(request jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT (request - 'selector' - 'waves') || jsonb_build_object(
        'selector', (request -> 'selector') - 'tenantIds' || jsonb_build_object(
            'tenantIdCount',
            CASE WHEN jsonb_typeof(request -> 'selector' -> 'tenantIds') = 'array'
                 THEN jsonb_array_length(request -> 'selector' -> 'tenantIds') END),
        'waves', (
            SELECT coalesce(jsonb_agg(wave - 'tenantIds' || jsonb_build_object(
                       'tenantIdCount',
                       CASE WHEN jsonb_typeof(wave -> 'tenantIds') = 'array'
                            THEN jsonb_array_length(wave -> 'tenantIds') END)
                   ORDER BY position), '[]'::jsonb)
            FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(request -> 'waves') = 'array'
                     THEN request -> 'waves' ELSE '[]'::jsonb END
            ) WITH ORDINALITY AS waves (wave, position)))
$$;

ALTER TABLE rollouts ADD COLUMN request_summary jsonb
    GENERATED ALWAYS AS (rollout_request_summary(request)) STORED;

-- The list's order (newest first) without sorting every rollout.
CREATE INDEX rollouts_created_idx ON rollouts (created_at DESC, id);
