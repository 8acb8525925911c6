-- Keyset positions a late commit cannot fall behind (see tenancy/paging.py): each row records
-- the top-level transaction that inserted it, and pages are ordered by it.
-- depends: 0002_audit_trail

-- A volatile default: existing rows all get this migration's transaction id, and keep their
-- created_at order among themselves through the second sort column.
ALTER TABLE tenants ADD COLUMN insert_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX tenants_position_idx ON tenants (insert_xid, created_at, id);
CREATE INDEX tenants_status_position_idx ON tenants (status, insert_xid, created_at, id);
CREATE INDEX tenants_tier_position_idx ON tenants (sla_tier, insert_xid, created_at, id);
DROP INDEX tenants_status_created_idx;
DROP INDEX tenants_tier_created_idx;
