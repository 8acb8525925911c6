-- The tenant directory: every tenant's location (status, server, jdbcUrl) carries an epoch that
-- grows by one with each change of those, so a service caching locations never lets an older
-- one replace a newer one. A trigger raises it, so every write path (transitions, the jdbcUrl,
-- placement, deletion, restore, a move's switch) gets it without remembering to.
-- depends: 0014_storage_servers

ALTER TABLE tenants ADD COLUMN epoch bigint NOT NULL DEFAULT 1;

CREATE FUNCTION tenants_raise_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Never taken from the statement: only this trigger moves it.
    NEW.epoch := OLD.epoch;
    IF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.jdbc_url IS DISTINCT FROM OLD.jdbc_url
       OR NEW.storage_server IS DISTINCT FROM OLD.storage_server THEN
        NEW.epoch := OLD.epoch + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_epoch BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_raise_epoch();
