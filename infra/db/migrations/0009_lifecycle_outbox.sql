-- Lifecycle events: the transactional outbox. Each row is written by the statement that writes
-- its audit event (tenant_events or rollout_events), so an event exists exactly when its change
-- committed; the relay publishes unpublished rows in `seq` order and stamps `published_at`.
-- depends: 0008_fleet_rollouts

CREATE TABLE event_outbox (
    -- The CloudEvent's id: the bus's de-duplication id and the consumers'.
    id           uuid PRIMARY KEY,
    seq          bigserial NOT NULL UNIQUE,
    family       text NOT NULL CHECK (family IN ('tenants', 'rollouts')),
    subject_key  text NOT NULL,
    name         text NOT NULL,
    event        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX event_outbox_unpublished_idx ON event_outbox (seq) WHERE published_at IS NULL;
