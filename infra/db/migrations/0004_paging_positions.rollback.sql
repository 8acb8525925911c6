CREATE INDEX tenants_status_created_idx ON tenants (status, created_at, id);
CREATE INDEX tenants_tier_created_idx ON tenants (sla_tier, created_at, id);
ALTER TABLE tenants DROP COLUMN insert_xid;
