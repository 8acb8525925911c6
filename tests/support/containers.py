"""The containers switch in the test session (devstack.containers), as a pytest plugin.

When the session collects integration tests and the switch selects containers, the variables
the session fixtures read (`PLATFORM_DATABASE_URL`, `TEMPORAL_ADDRESS`, `PLATFORM_EVENTS_URL`,
`PLATFORM_TEST_KAFKA_BOOTSTRAP`) point at containers for the whole session; otherwise nothing
changes and the embedded servers start as before. A unit-only run never starts a container.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.containers import external_or_containers


@pytest.fixture(scope="session", autouse=True)
def container_servers(request: pytest.FixtureRequest) -> Iterator[dict[str, str] | None]:
    """The overrides in force for the session (None: embedded or external servers)."""
    if not any(item.get_closest_marker("integration") for item in request.session.items):
        yield None
        return
    with external_or_containers() as overrides, pytest.MonkeyPatch.context() as patch:
        for name, value in (overrides or {}).items():
            patch.setenv(name, value)
        yield overrides
