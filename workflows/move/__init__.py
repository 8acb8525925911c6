"""MoveTenantWorkflow: a tenant's storage moved to another server (see contracts)."""
