DROP TRIGGER tenants_epoch ON tenants;
DROP FUNCTION tenants_raise_epoch();
ALTER TABLE tenants DROP COLUMN epoch;
