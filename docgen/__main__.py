"""`python -m docgen` writes the handbook's generated reference pages; `--check` writes nothing
and exits 1 naming each file that is stale or missing (0 when every one is fresh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from docgen.pages import DOCS_DIR, stale, write


def main(argv: list[str] | None = None) -> int:
    """The command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m docgen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    parser.add_argument(
        "--docs-dir",
        type=Path,
        default=DOCS_DIR,
        help=f"the handbook's folder (default: {DOCS_DIR})",
    )
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.docs_dir)
        for path in outdated:
            sys.stderr.write(f"stale or missing: {args.docs_dir / path}\n")
        if outdated:
            sys.stderr.write("regenerate them with `python -m docgen` (or `make docs`)\n")
            return 1
        return 0
    for path in write(args.docs_dir):
        sys.stdout.write(f"wrote {args.docs_dir / path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
