"""Drift detection between tenant rows, their workflows and the storage server."""

from reconciliation.reconciler import (
    Drift,
    DriftKind,
    Reconciler,
    ReconciliationReport,
)

__all__ = ["Drift", "DriftKind", "Reconciler", "ReconciliationReport"]
