-- The relay is woken by each committed batch of lifecycle events instead of finding them at its
-- next look: a statement that adds events notifies `platform_outbox`, which PostgreSQL delivers
-- to the relay's listening session when the transaction commits (never before, never if it
-- rolls back). The relay still looks every poll interval, so a lost notification costs only time.
-- depends: 0014_storage_servers

CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('platform_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
