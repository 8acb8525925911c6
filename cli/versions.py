"""`services versions --require V`: whether every tenant has reached version V, from the
version spread the API answers (`GET /api/services/{name}/versions`).

Versions compare as strings by code point, exactly as the API's `minVersion` does
(infra/db/services.py), so a service's versions must sort as strings. The check is the deploy
gate of docs/operating/rollouts.md: no failed record, every tenant with a recorded version,
none below V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def below(version: str, required: str) -> bool:
    """Whether `version` is lower than `required` (code point order, like `minVersion`)."""
    return version < required


@dataclass(frozen=True)
class Requirement:
    """The answer to "has every tenant reached `version`?" for one service's spread."""

    version: str
    tenants: int
    below: dict[str, int]
    without_version: int
    failed: int

    @classmethod
    def of(cls, spread: dict[str, Any], version: str) -> Requirement:
        """Check the API's spread document against `version`."""
        versions: dict[str, int] = spread.get("versions") or {}
        return cls(
            version=version,
            tenants=int(spread.get("tenants", 0)),
            below={v: n for v, n in sorted(versions.items()) if below(v, version)},
            without_version=int(spread.get("tenants", 0)) - sum(versions.values()),
            failed=int(spread.get("failed", 0)),
        )

    @property
    def tenants_below(self) -> int:
        """Tenants whose recorded version is lower than the required one."""
        return sum(self.below.values())

    @property
    def met(self) -> bool:
        """True when every tenant with a record is at `version` or later and none failed."""
        return self.tenants_below == 0 and self.without_version == 0 and self.failed == 0

    def summary(self) -> str:
        """One line for people: met, or how many tenants are short and why."""
        if self.met:
            return f"every tenant ({self.tenants}) is at {self.version} or later"
        parts = []
        if self.below:
            spread = ", ".join(f"{n} at {v}" for v, n in self.below.items())
            parts.append(
                f"{self.tenants_below} of {self.tenants} tenants below {self.version} ({spread})"
            )
        if self.without_version:
            parts.append(f"{self.without_version} without a recorded version")
        if self.failed:
            parts.append(f"{self.failed} with a FAILED migration")
        return "; ".join(parts)

    def document(self) -> dict[str, Any]:
        """The requirement as JSON fields (camelCase, like the API's)."""
        return {
            "version": self.version,
            "met": self.met,
            "tenantsBelow": self.tenants_below,
            "below": self.below,
            "withoutVersion": self.without_version,
            "failed": self.failed,
        }
