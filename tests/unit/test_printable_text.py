"""The free-text rule and the escaping every display applies (tenancy.text), platformctl's
JSON output and the console's template finalizer."""

from __future__ import annotations

import json
import unicodedata

import pytest
from markupsafe import Markup

from api.console.web import _templates
from cli.output import printable_json
from tenancy.text import escape_unprintable, refuse_unprintable

# C0 and C1 controls, separators, bidi controls and other format characters, a non-breaking
# space, a character beyond the BMP (a language tag).
UNPRINTABLE = (
    "\x00", "\x1b", "\n", "\x7f", "\x85", "\x9b", "\xa0", "\u2028", "\u2029", "\u200b",
    "\u202e", "\u2066", "\ufeff", "\U000e0001",
)  # fmt: skip


@pytest.mark.parametrize("character", UNPRINTABLE, ids=lambda c: f"U+{ord(c):04X}")
def test_each_unprintable_character_is_refused_naming_it(character: str) -> None:
    assert not character.isprintable(), unicodedata.category(character)

    with pytest.raises(ValueError, match=f"U\\+{ord(character):04X} is not"):
        refuse_unprintable(f"a{character}b")


def test_printable_text_of_any_script_is_taken_unchanged() -> None:
    text = "Kündigung — 終了 ✓ [x] \\u202e"

    assert refuse_unprintable(text) is text
    assert escape_unprintable(text) is text


def test_escaping_shows_every_unprintable_character_as_its_escape() -> None:
    escaped = escape_unprintable("a\x1b[2J\x85\x9b\u2028\u202eb\U000e0001\n")

    assert escaped == "a\\x1b[2J\\x85\\x9b\\u2028\\u202eb\\U000e0001\\n"
    assert escaped.isprintable()
    assert escape_unprintable("a\nb\u202e", keep="\n") == "a\nb\\u202e"


def test_platformctl_json_escapes_what_is_not_printable_and_holds_the_same_document() -> None:
    document = {"name": "Evil\u202eCorp\x85\u2028\U000e0001", "plain": "ok ✓", "n": [1, None]}

    text = printable_json(document)

    assert all(c.isprintable() or c == "\n" for c in text), text
    assert "\\u202e" in text
    assert "\\udb40\\udc01" in text
    assert "ok ✓" in text
    assert json.loads(text) == document


def test_the_console_escapes_every_expression_but_keeps_html_whitespace() -> None:
    template = _templates.from_string(
        "<p>{{ name }}</p><p>{{ names | join(', ') }}</p><textarea>{{ typed }}</textarea>"
    )

    html = template.render(
        name="<b>Evil\u202eCorp</b>", names=["a\x85", "b\u2028"], typed="acme\nglobex"
    )

    assert html == (
        "<p>&lt;b&gt;Evil\\u202eCorp&lt;/b&gt;</p><p>a\\x85, b\\u2028</p>"
        "<textarea>acme\nglobex</textarea>"
    )


def test_markup_stays_markup_through_the_console_filter() -> None:
    printable = _templates.filters["printable"]

    assert printable(Markup("<i>x\u202e</i>")) == Markup("<i>x\\u202e</i>")
    assert printable(3) == 3
