DROP TABLE tenant_events;
ALTER TABLE tenants DROP COLUMN created_by;
