DROP INDEX IF EXISTS projects_active_by_account_idx;

ALTER TABLE projects DROP COLUMN IF EXISTS archived_at;
