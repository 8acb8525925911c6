"""`FleetRolloutWorkflow`: its workflow, options, contracts and client-side start.

This module imports nothing, so the API can use `contracts` without the workflow and its
activities."""
