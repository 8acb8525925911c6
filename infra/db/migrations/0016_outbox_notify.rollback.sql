DROP TRIGGER event_outbox_notify ON event_outbox;
DROP FUNCTION notify_outbox();
