"""Drift detection between tenant rows, their workflows and the storage servers."""

from reconciliation.reconciler import (
    Drift,
    DriftKind,
    Reconciler,
    ReconciliationReport,
    UnreachableServer,
)

__all__ = ["Drift", "DriftKind", "Reconciler", "ReconciliationReport", "UnreachableServer"]
