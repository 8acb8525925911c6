"""A light PromQL reader for the alert rules' test: which metrics an expression selects, with
which label matchers, and which labels its `by`/`without`/`on`/`ignoring`/`group_*` clauses
name. Not a parser: enough of the grammar to find every name a rule depends on, so a rule
naming a metric or a label the platform does not export is refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>,(){}\[\]@:])
    """,
    re.VERBOSE,
)
# Always functions, even when `by`/`without` comes between the name and its argument.
AGGREGATORS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
_AGGREGATION_CLAUSES = frozenset({"by", "without"})
_MATCHING_CLAUSES = frozenset({"on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


class PromQLSyntaxError(ValueError):
    """The expression has a character or a shape this reader does not know."""


@dataclass(frozen=True)
class Token:
    """One lexical token: its kind (string, duration, number, ident, op), text and place."""

    kind: str
    text: str
    index: int


@dataclass(frozen=True)
class Selector:
    """A vector selector: its metric name (None for `{__name__=...}` alone) and matchers."""

    metric: str | None
    matchers: tuple[tuple[str, str, str], ...]
    position: int

    def values(self, label: str) -> list[str]:
        """The values an equality or regex matcher names for `label` (alternatives split)."""
        found = []
        for name, op, value in self.matchers:
            if name == label and op in ("=", "=~"):
                found += value.split("|") if op == "=~" else [value]
        return found


@dataclass(frozen=True)
class Clause:
    """A `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` clause: its labels, and the
    metrics of the expression it applies to (the aggregation's argument; for vector matching,
    the whole expression)."""

    keyword: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]


def tokenize(expr: str) -> list[Token]:
    """The expression's tokens, without white space and comments."""
    tokens: list[Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLSyntaxError(f"unexpected {expr[position]!r} at {position} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), len(tokens)))
        position = match.end()
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body if text.startswith("`") else re.sub(r"\\(.)", r"\1", body)


def _matching(tokens: list[Token], start: int) -> int:
    """The index of the bracket that closes the one at `start`."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    opening = tokens[start].text
    depth = 0
    for index in range(start, len(tokens)):
        text = tokens[index].text if tokens[index].kind == "op" else ""
        if text == opening:
            depth += 1
        elif text == pairs[opening]:
            depth -= 1
            if depth == 0:
                return index
    raise PromQLSyntaxError(f"unclosed {opening!r}")


def _opening(tokens: list[Token], end: int) -> int:
    """The index of the `(` that the `)` at `end` closes."""
    depth = 0
    for index in range(end, -1, -1):
        text = tokens[index].text if tokens[index].kind == "op" else ""
        if text == ")":
            depth += 1
        elif text == "(":
            depth -= 1
            if depth == 0:
                return index
    raise PromQLSyntaxError("unopened ')'")


def _is(tokens: list[Token], index: int, text: str) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == "op" and tokens[index].text == text


def _matchers(tokens: list[Token], start: int, end: int) -> tuple[tuple[str, str, str], ...]:
    """The matchers between the braces at `start` and `end`."""
    found = []
    index = start + 1
    while index < end:
        name, op, value = tokens[index : index + 3]
        if name.kind != "ident" or op.text not in ("=", "!=", "=~", "!~") or value.kind != "string":
            raise PromQLSyntaxError(f"cannot read the matcher at {name.text!r}")
        found.append((name.text, op.text, _unquote(value.text)))
        index += 3
        if _is(tokens, index, ","):
            index += 1
    return tuple(found)


@dataclass(frozen=True)
class _Read:
    selectors: tuple[Selector, ...]
    clauses: tuple[tuple[str, tuple[str, ...], int, int], ...]


def _read(tokens: list[Token]) -> _Read:
    selectors: list[Selector] = []
    # (keyword, labels, first and last token index of the expression it applies to)
    clauses: list[tuple[str, tuple[str, ...], int, int]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        word = token.text.lower() if token.kind == "ident" else ""
        if word in _AGGREGATION_CLAUSES | _MATCHING_CLAUSES:
            if not _is(tokens, index + 1, "("):
                index += 1  # group_left without labels
                continue
            close = _matching(tokens, index + 1)
            labels = tuple(t.text for t in tokens[index + 2 : close] if t.kind == "ident")
            if word in _MATCHING_CLAUSES:
                scope = (0, len(tokens) - 1)
            elif _is(tokens, index - 1, ")"):  # sum(x) by (l)
                scope = (_opening(tokens, index - 1), index - 1)
            elif _is(tokens, close + 1, "("):  # sum by (l) (x)
                scope = (close + 1, _matching(tokens, close + 1))
            else:
                raise PromQLSyntaxError(f"{word} ({', '.join(labels)}) aggregates nothing")
            clauses.append((word, labels, *scope))
            index = close + 1
        elif token.kind == "ident" and (
            word in AGGREGATORS or word in _KEYWORDS or _is(tokens, index + 1, "(")
        ):
            index += 1  # a function, an aggregation or an operator keyword
        elif token.kind == "ident" or _is(tokens, index, "{"):
            metric = token.text if token.kind == "ident" else None
            brace = index + 1 if metric is not None else index
            matchers: tuple[tuple[str, str, str], ...] = ()
            end = index
            if _is(tokens, brace, "{"):
                end = _matching(tokens, brace)
                matchers = _matchers(tokens, brace, end)
            if metric is None:
                metric = next((v for n, o, v in matchers if n == "__name__" and o == "="), None)
            selectors.append(Selector(metric, matchers, index))
            index = end + 1
        elif _is(tokens, index, "["):
            index = _matching(tokens, index) + 1  # a range or a subquery's
        else:
            index += 1
    return _Read(tuple(selectors), tuple(clauses))


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr`, in order (an input series' notation included)."""
    return list(_read(tokenize(expr)).selectors)


def clauses(expr: str) -> list[Clause]:
    """Every grouping or matching clause of `expr`, with the metrics it applies to."""
    read = _read(tokenize(expr))
    found = []
    for keyword, labels, first, last in read.clauses:
        metrics = tuple(
            s.metric for s in read.selectors if s.metric is not None and first <= s.position <= last
        )
        found.append(Clause(keyword, labels, metrics))
    return found


def problems(
    expr: str, known: Mapping[str, frozenset[str] | None], where: str = "expr"
) -> list[str]:
    """What in `expr` names a metric or a label that `known` (series name -> its labels, None
    for any label) lacks, one message each."""
    found = []
    for selector in selectors(expr):
        if selector.metric is None:
            found.append(f"{where}: a selector without a metric name: {selector.matchers}")
            continue
        if selector.metric not in known:
            found.append(f"{where}: metric {selector.metric!r} is not exported by the platform")
            continue
        allowed = known[selector.metric]
        for label, _, _ in selector.matchers:
            if allowed is not None and label != "__name__" and label not in allowed:
                found.append(
                    f"{where}: label {label!r} is not a label of {selector.metric} "
                    f"({', '.join(sorted(allowed))})"
                )
    for clause in clauses(expr):
        labels = _union(known.get(metric) for metric in clause.metrics)
        for label in clause.labels:
            if labels is not None and label not in labels:
                names = ", ".join(clause.metrics) or "no metric"
                found.append(
                    f"{where}: {clause.keyword} ({label}) names a label that {names} lacks"
                )
    return found


def _union(label_sets: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    union: frozenset[str] = frozenset()
    for labels in label_sets:
        if labels is None:
            return None
        union |= labels
    return union
