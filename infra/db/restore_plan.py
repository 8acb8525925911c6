"""In which order, and as whom, `pg_restore` puts a tenant's archive into storage that exists
already: each object restored by its owner (`pg_restore --role=<owner>`), which the platform's
role may become (devstack.roles: SET, not INHERIT), so nobody needs to be superuser.

One pg_restore runs as one role, so the archive's entries (`pg_restore --list`) are cut into
runs of one owner each (`--use-list`). The order keeps what the archive records:

- every dependency (`--list --verbose` prints them), and the sections: all of pre-data, then the
  data, then post-data (a foreign key is checked against rows of another service's table, so
  both tables' rows come first); a grant or comment goes with the latest section it depends on;
- within a section, a run takes every entry of its owner whose dependencies are restored (or in
  the run, before it), so owners alternate only where the dependencies make them: a service's
  grant on its table is in the run that creates the table, before another service's foreign
  key needs its REFERENCES;
- the data runs depend on nothing of each other: they are one step, run at once.

Left out: the schema's (SCHEMA mode) or `public`'s (DATABASE mode) own entry, and the
grants, comments and labels of the schema and the database: the target's storage exists,
granted as at provisioning, and a frozen source's grants (revoked) must not travel. Entries
pg_restore would not restore into an existing database (`DATABASE`, `ENCODING`, ...) appear in
no section and are left out as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SECTIONS = ("pre-data", "data", "post-data")
_DATA = SECTIONS.index("data")
_ENTRY = re.compile(r"^(\d+); \d+ \d+ (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:(.*)$")
# The storage's own entries: the schema (or database) and its grants, comments and labels.
_STORAGE_ITSELF = re.compile(
    r"^(SCHEMA|DATABASE|(ACL|COMMENT|SECURITY LABEL) - (SCHEMA|DATABASE)) "
)


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore --list`: its dump id, the line itself, the owner (the last
    word; empty when the entry has none) and the ids it depends on."""

    dump_id: int
    line: str
    owner: str
    dependencies: tuple[int, ...] = ()

    @property
    def description(self) -> str:
        """What follows the ids: type, schema, name and owner."""
        match = _ENTRY.match(self.line)
        return match.group(2) if match else ""


@dataclass(frozen=True)
class RestoreRun:
    """One pg_restore: the entries it restores (in archive order), as `owner`."""

    owner: str
    entries: tuple[TocEntry, ...]

    def use_list(self) -> str:
        """The `--use-list` file of this run."""
        return "".join(f"{entry.line}\n" for entry in self.entries)


@dataclass(frozen=True)
class RestorePlan:
    """Steps in order; the runs of one step may run at once. `tables`: tables with rows."""

    steps: tuple[tuple[RestoreRun, ...], ...]
    tables: int


def parse_listing(text: str) -> list[TocEntry]:
    """The entries of a `pg_restore --list` (with `--verbose`: their dependencies)."""
    entries: list[TocEntry] = []
    for line in text.splitlines():
        entry = _ENTRY.match(line)
        if entry:
            owner = entry.group(2).rsplit(" ", 1)[-1]
            entries.append(TocEntry(int(entry.group(1)), line, owner))
            continue
        depends = _DEPENDS.match(line)
        if depends and entries:
            last = entries[-1]
            ids = tuple(int(part) for part in depends.group(1).split())
            entries[-1] = TocEntry(last.dump_id, last.line, last.owner, last.dependencies + ids)
    return entries


def plan_restore(listing: str, section_listings: Sequence[str]) -> RestorePlan:
    """The runs restoring the archive of `listing` (`--list --verbose`), given the listing of
    each of `SECTIONS` (`--list --section=...`), in that order."""
    section_of = {
        entry.dump_id: index
        for index, text in enumerate(section_listings)
        for entry in parse_listing(text)
    }
    stage: dict[int, int] = {}
    wanted: list[TocEntry] = []
    for entry in parse_listing(listing):
        if entry.dump_id not in section_of or _STORAGE_ITSELF.match(entry.description):
            continue
        # The archive lists an entry after what it depends on: their stages are known.
        stage[entry.dump_id] = max(
            [section_of[entry.dump_id], *(stage[d] for d in entry.dependencies if d in stage)]
        )
        wanted.append(entry)
    steps: list[tuple[RestoreRun, ...]] = []
    restored: set[int] = set()
    for index in range(len(SECTIONS)):
        runs = _owner_runs([e for e in wanted if stage[e.dump_id] == index], stage, restored)
        if index == _DATA and _independent(runs):
            steps.append(tuple(runs))
        else:
            steps.extend((run,) for run in runs)
    tables = sum(1 for entry in wanted if entry.description.startswith("TABLE DATA "))
    return RestorePlan(tuple(step for step in steps if step), tables)


def _owner_runs(
    pending: list[TocEntry], stage: dict[int, int], restored: set[int]
) -> list[RestoreRun]:
    """Cut one section's entries (in archive order) into runs of one owner; `restored` grows
    with them. Ids outside `stage` are not restored here and hold nothing up."""
    runs: list[RestoreRun] = []
    while pending:
        # The first pending entry is always ready: everything before it is restored.
        owner = pending[0].owner
        taken: list[TocEntry] = []
        grew = True
        while grew:
            grew = False
            for entry in pending:
                if entry.owner == owner and entry not in taken and _ready(entry, stage, restored):
                    taken.append(entry)
                    restored.add(entry.dump_id)
                    grew = True
        order = {entry.dump_id: position for position, entry in enumerate(pending)}
        runs.append(RestoreRun(owner, tuple(sorted(taken, key=lambda e: order[e.dump_id]))))
        pending = [entry for entry in pending if entry.dump_id not in restored]
    return runs


def _ready(entry: TocEntry, stage: dict[int, int], restored: set[int]) -> bool:
    return all(d in restored or d not in stage for d in entry.dependencies)


def _independent(runs: list[RestoreRun]) -> bool:
    """No run depends on an entry of another run."""
    run_of = {entry.dump_id: i for i, run in enumerate(runs) for entry in run.entries}
    return all(
        run_of.get(d, i) == i
        for i, run in enumerate(runs)
        for entry in run.entries
        for d in entry.dependencies
    )
