-- Bounded event stores: the pruner finds published events and settled commands past their
-- retention through an index (in small batches, never a scan of the table), and the backlog's
-- oldest unpublished event is the first entry of an index rather than a scan of the backlog.
-- depends: 0010_downstream_commands

CREATE INDEX event_outbox_unpublished_age_idx ON event_outbox (created_at)
    WHERE published_at IS NULL;
CREATE INDEX event_outbox_published_idx ON event_outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX downstream_commands_settled_idx ON downstream_commands (replied_at)
    WHERE outcome IN ('succeeded', 'rejected');
