-- An event written by an activity that may run more than once (a local activity re-run after a
-- workflow task timed out) carries a key, and is written once per key.
-- depends: 0006_tenant_deletion

ALTER TABLE tenant_events ADD COLUMN event_key text;
CREATE UNIQUE INDEX tenant_events_key_idx ON tenant_events (event_key) WHERE event_key IS NOT NULL;
