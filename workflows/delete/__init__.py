"""`DeleteTenantWorkflow`: its workflow, activity options, contracts and client-side starts.

This module imports nothing, so the API can use `contracts` and `starts` without the workflow
and its activities."""
