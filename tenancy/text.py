"""Free text that people type and read. A request refuses text with a character that is not
printable (`str.isprintable()`: C0 and C1 controls, line and paragraph separators, bidi and other
format characters such as U+202E), so none is stored from now on; every display shows text
already stored with such characters escaped, so none reaches a terminal or a page raw."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def refuse_unprintable(value: str) -> str:
    """`value` when every character is printable; a ValueError naming the first one that is
    not (a pydantic validator: the API answers 422 naming the field)."""
    for character in value:
        if not character.isprintable():
            raise ValueError(
                f"must contain printable characters only (U+{ord(character):04X} is not)"
            )
    return value


def escape_unprintable(text: str, keep: str = "") -> str:
    """`text` with each character that is not printable (but those in `keep`) shown as its
    escape (`\\x1b`, `\\n`, `\\x85`, `\\u202e`); printable text is returned as it is."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


PrintableText = Annotated[str, AfterValidator(refuse_unprintable)]
