"""reference/settings.md: every field of `tenancy.settings.Settings` and of the JSON objects its
list settings take (`DownstreamService`, `StorageServer`), with its type, default and docstring."""

from __future__ import annotations

import json
import types
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AnyHttpUrl, BaseModel, PostgresDsn
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from docgen.markdown import banner, cell, code, prose, table
from tenancy.settings import Settings

PATH = "reference/settings.md"
SOURCES = "tenancy/settings.py and tenancy/fleet.py"

_UNITS = (("days", 86400), ("hours", 3600), ("minutes", 60))


def env_var(name: str, field: FieldInfo) -> str:
    """The variable a Settings field is read from: its validation alias, else prefix + NAME."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return f"{Settings.model_config.get('env_prefix', '')}{name.upper()}"


def _optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _choices(annotation: Any) -> list[str] | None:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(m.value) for m in annotation]
    return None


def _bounds(metadata: list[Any]) -> str:
    low = high = ""
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {item.ge}"
        elif isinstance(item, annotated_types.Gt) and not isinstance(item.gt, timedelta):
            low = f"above {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = str(item.le)
    if low.startswith("at least ") and high:
        return f", {low.removeprefix('at least ')} to {high}"
    return f", {low}" if low else (f", at most {high}" if high else "")


def _pattern(metadata: list[Any]) -> str | None:
    for item in metadata:
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            return pattern
    return None


def type_name(annotation: Any, metadata: list[Any]) -> str:
    """The type as an operator reads it: `duration (seconds)`, `list of JSON objects`, ..."""
    annotation = _optional(annotation)
    choices = _choices(annotation)
    if choices is not None:
        return "one of " + ", ".join(code(c) for c in choices)
    origin = get_origin(annotation)
    if origin is tuple:
        item = get_args(annotation)[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return f"list of JSON objects ({item.__name__}, below)"
        item_choices = _choices(item)
        if item_choices is not None:
            return "list of " + ", ".join(code(c) for c in item_choices)
        return f"list of {type_name(item, [])}s"
    if origin is dict:
        key, value = get_args(annotation)
        keys = _choices(key)
        named = ", ".join(code(k) for k in keys) if keys else type_name(key, [])
        return f"JSON object: keys {named}, values {type_name(value, [])}s"
    if annotation is timedelta:
        return "duration (seconds)"
    if annotation is int:
        return "integer" + _bounds(metadata)
    if annotation is float:
        return "number" + _bounds(metadata)
    if annotation is PostgresDsn:
        return "PostgreSQL URL"
    if annotation is AnyHttpUrl:
        return "HTTP(S) URL"
    if annotation is Path:
        return "file path"
    if annotation is str:
        pattern = _pattern(metadata)
        if pattern is not None:
            return f"string matching {code(pattern)}"
        if any(isinstance(m, annotated_types.MinLen) for m in metadata):
            return "non-empty string"
        return "string"
    raise ValueError(f"docgen.settings has no readable name for the type {annotation!r}")


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    text = code(f"{seconds:g}")
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{text} ({count} {unit if count > 1 else unit[:-1]})"
    return text


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(_json(k)): _json(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


def default(field: FieldInfo) -> str:
    """The default as an operator writes it in the environment (`unset` when there is none)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, timedelta):
        return _seconds(value)
    if isinstance(value, tuple | list | dict):
        return code(json.dumps(_json(value)))
    if isinstance(value, Enum):
        return code(str(value.value))
    return code(str(value))


def nested_models() -> list[tuple[str, type[BaseModel]]]:
    """The models whose JSON objects a Settings list takes, with the variable that takes them."""
    found = []
    for name, field in Settings.model_fields.items():
        annotation = _optional(field.annotation)
        if get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                found.append((env_var(name, field), item))
    return found


def _variable(name: str, field: FieldInfo) -> str:
    variable = code(env_var(name, field))
    if isinstance(field.validation_alias, str):
        return f"{variable} (no prefix)"
    return variable


def _row(name: str, field: FieldInfo) -> list[str]:
    return [
        name,
        type_name(field.annotation, field.metadata),
        default(field),
        cell(field.description or ""),
    ]


def render() -> str:
    """The page."""
    prefix = Settings.model_config.get("env_prefix", "")
    out = [
        banner(SOURCES),
        "# Settings\n",
        f"{prose(Settings.__doc__)} The API and the worker read them from the environment "
        f"(prefix `{prefix}`) when they start; a refused value stops the process with an error "
        "that names the variable and the rule, never the value. Durations are plain seconds; "
        "lists and objects are JSON.\n",
        "## Environment variables\n",
        table(
            ("Variable", "Type", "Default", "Description"),
            (_row(_variable(name, field), field) for name, field in Settings.model_fields.items()),
        ),
    ]
    for variable, model in nested_models():
        out += [
            f"## {model.__name__}: an entry of {variable}\n",
            f"{prose(model.__doc__)}\n",
            table(
                ("Key", "Type", "Default", "Description"),
                (
                    _row(code(field.alias or name), field)
                    for name, field in model.model_fields.items()
                ),
            ),
        ]
    return "\n".join(out)
