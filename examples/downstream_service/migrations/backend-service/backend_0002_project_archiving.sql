-- Projects can be archived; listings only ever read the active ones, hence the partial index.
-- depends: backend_0001_accounts_projects
ALTER TABLE projects ADD COLUMN IF NOT EXISTS archived_at TIMESTAMPTZ;

CREATE INDEX IF NOT EXISTS projects_active_by_account_idx
    ON projects (account_id)
    WHERE archived_at IS NULL;
