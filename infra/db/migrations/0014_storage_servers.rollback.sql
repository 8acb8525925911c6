DROP TABLE storage_server_events;
DROP TABLE storage_servers;
DROP INDEX tenants_storage_server_idx;
ALTER TABLE tenants DROP COLUMN storage_server;
