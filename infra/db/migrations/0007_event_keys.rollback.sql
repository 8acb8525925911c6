DROP INDEX tenant_events_key_idx;
ALTER TABLE tenant_events DROP COLUMN event_key;
