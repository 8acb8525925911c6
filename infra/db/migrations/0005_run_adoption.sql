-- A new workflow run may take a tenant over from a closed one (retry-provisioning,
-- retry-migration of a closed run, continue-as-new, the reconciler's restart).
-- depends: 0002_audit_trail

ALTER TABLE tenant_events DROP CONSTRAINT tenant_events_action_check;
ALTER TABLE tenant_events ADD CONSTRAINT tenant_events_action_check
    CHECK (action IN ('CREATED', 'STATUS_CHANGED', 'RETRY_REQUESTED', 'RUN_ADOPTED'));
