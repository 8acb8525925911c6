"""Search attributes the workflow keeps current, so runs can be found in the Web UI and CLI.

Not named `Status`: that clashes with the Web UI's own column.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
TENANT_STATUS = SearchAttributeKey.for_keyword("TenantStatus")
SLA_TIER = SearchAttributeKey.for_keyword("SlaTier")
STORAGE_MODE = SearchAttributeKey.for_keyword("StorageMode")
# A fleet rollout's status (`FleetRolloutWorkflow`), so the Web UI lists rollouts by status.
ROLLOUT_STATUS = SearchAttributeKey.for_keyword("RolloutStatus")

# A tenant move's phase (`MoveTenantWorkflow`): PREPARING ... SWITCHED.
MOVE_PHASE = SearchAttributeKey.for_keyword("MovePhase")

ALL = (TENANT_ID, TENANT_STATUS, SLA_TIER, STORAGE_MODE, ROLLOUT_STATUS, MOVE_PHASE)
