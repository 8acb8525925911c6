"""The README stays a short way in, the handbook and the changelog speak to users: no tracker
issue numbers, no link to a page that does not exist, the changelog in Keep a Changelog form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
# "issue 11", "(issue 9)", "issues 22 and 23", "#24": what a tracker calls a change.
TRACKER_REFERENCE = re.compile(r"\bissues?[ -]#?\d+|\(#\d+\)|\bGH-\d+", re.IGNORECASE)
LOCAL_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")
CHANGE_TYPES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _product_documents() -> list[Path]:
    return [README, CHANGELOG, *sorted(DOCS.rglob("*.md"))]


def test_readme_is_read_in_minutes() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for command in ("make dev", "make test", "make docs"):
        assert command in text


@pytest.mark.parametrize("document", _product_documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documentation_names_no_tracker_issue(document: Path) -> None:
    found = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1)
        if TRACKER_REFERENCE.search(line)
    ]
    assert found == [], "what changed when goes into CHANGELOG.md, not the docs"


def test_readme_links_resolve() -> None:
    targets = LOCAL_LINK.findall(README.read_text(encoding="utf-8"))
    assert targets, "the README maps the handbook"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert missing == []


def test_every_handbook_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(entries: list[object]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            values = entry.values() if isinstance(entry, dict) else [entry]
            for value in values:
                found |= pages(value) if isinstance(value, list) else {str(value)}
        return found

    in_nav = pages(config["nav"])
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert sorted(in_nav - on_disk) == [], "nav entries without a page"
    assert sorted(on_disk - in_nav) == [], "pages a reader cannot reach from the nav"


def test_changelog_keeps_a_changelog() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert releases, "no release sections"
    assert releases[0][0] == "Unreleased"
    assert all(date for name, date in releases[1:]), "a release without its date"
    kinds = set(re.findall(r"^### (\w+)$", text, re.MULTILINE))
    assert kinds, "no change sections"
    assert kinds <= CHANGE_TYPES, f"unknown change types: {sorted(kinds - CHANGE_TYPES)}"
