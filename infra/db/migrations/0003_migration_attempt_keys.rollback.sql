ALTER TABLE tenant_migrations DROP COLUMN key_failures, DROP COLUMN attempt_key;
