"""The configuration reference (docs/configuration.md), generated from the config models.

    python -m mlpipe.core.config_reference > docs/configuration.md

`render()` walks `PipelineConfig` section by section, in its field order, and writes one table
per section: the key path, a readable type, the default and the field's `description`. Nested
models recurse with dotted paths (`data.csv.delimiter`), items of a list of models are `[]`
(`features.ratios[].name`) and values of a dict of models are `<name>`
(`tuning.spaces.<family>.<param>.low`). `section_rows` is the walker: it takes any pydantic model
class, which is how the unit test renders a model of its own. A Prefect-free kernel module that
imports no scikit-learn (the family registry names its estimators by dotted path).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mlpipe.core.config import PipelineConfig
from mlpipe.core.families import (
    AUTO,
    BLEND,
    default_candidates,
    family_names,
    get_family,
)

COMMAND = "python -m mlpipe.core.config_reference > docs/configuration.md"
LONG_DEFAULT = 60  # characters; a longer default is written as YAML below its section's table
WORDS = ("required", "below", "(the keys below)")  # default cells that are words, not values

# Placeholders for the keys of a dict of models, by field name; other fields get `<key>`.
DICT_KEYS = {"params": "<family>", "spaces": "<family>"}
INNER_KEYS = {"spaces": "<param>"}


@dataclass(frozen=True)
class Row:
    """One line of a section's table."""

    key: str
    type: str
    default: str
    description: str
    long_default: Any = None  # set when `default` says "below": the value, written as YAML


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A readable type: `str`, `int | None`, `list[str]`, `dict[str, Any]`, `. | ,` for a Literal."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(_choice(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(arg) for arg in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _choice(value: Any) -> str:
    if value == "\t":
        return "tab"
    return value if isinstance(value, str) else _scalar(value)


def _scalar(value: Any) -> str:
    """A value as it is written in YAML or after `--set`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if value == "\t":
            return "tab"
        try:
            plain = yaml.safe_load(value) == value and value.strip() == value and value != ""
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value) if isinstance(value, (int, float)) else str(value)


def _plain(value: Any) -> Any:
    """Models as mappings (unset `None` fields left out), tuples as lists: what YAML would hold."""
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump(mode="json").items() if v is not None}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flow(value: Any) -> str:
    """A default in YAML's flow style, on one line."""
    value = _plain(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _constraints(field: FieldInfo) -> str:
    """The bounds pydantic checks (`>= 2`, `> 0, < 1`, `at least 1 item`)."""
    found = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                found.append(f"{sign} {_scalar(getattr(item, attr))}")
        if isinstance(item, annotated_types.MinLen):
            found.append(f"at least {item.min_length} item{'s' if item.min_length != 1 else ''}")
        if isinstance(item, annotated_types.MaxLen):
            found.append(f"at most {item.max_length} items")
    return ", ".join(found)


def _schema_choices(field: FieldInfo) -> list[str] | None:
    """Choices a field declares through a `json_schema_extra` callable (model.family's)."""
    extra = field.json_schema_extra
    if not callable(extra):
        return None
    schema: dict[str, Any] = {}
    try:
        extra(schema)
    except TypeError:  # a two-argument callable (schema, model class)
        return None
    return [str(choice) for choice in schema.get("enum", [])] or None


def _field_type(field: FieldInfo) -> str:
    choices = _schema_choices(field)
    text = "str: " + " | ".join(choices) if choices and field.annotation is str else type_name(field.annotation)
    bounds = _constraints(field)
    return f"{text} ({bounds})" if bounds else text


def _default(field: FieldInfo) -> tuple[str, Any]:
    """(the cell, the value when it is too long for the cell)."""
    if field.is_required():
        return "required", None
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel):
        return "(the keys below)", None
    text = _flow(value)
    if len(text) > LONG_DEFAULT:
        return "below", value
    return text, None


def _container_model(annotation: Any) -> tuple[str, Any] | None:
    """('list', Model) for list[Model] (or list[Model] | None), ('dict', value type) for
    dict[str, Model] and dict[str, dict[str, Model]]; None otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and _is_model(args[0]):
        return "list", args[0]
    if origin is dict and len(args) == 2:
        value = args[1]
        if _is_model(value) or (typing.get_origin(value) is dict and _is_model(typing.get_args(value)[-1])):
            return "dict", value
    return None


def section_rows(model: type[BaseModel], prefix: str) -> list[Row]:
    """Every field of `model`, nested models recursed, as rows keyed `prefix.field...`."""
    rows: list[Row] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        default, long_default = _default(field)
        rows.append(Row(key, _field_type(field), default, field.description or "", long_default))
        annotation = field.annotation
        if _is_model(annotation):
            rows += section_rows(annotation, key)
            continue
        container = _container_model(annotation)
        if container is None:
            continue
        kind, inner = container
        if kind == "list":
            rows += section_rows(inner, f"{key}[]")
        elif _is_model(inner):
            rows += section_rows(inner, f"{key}.{DICT_KEYS.get(name, '<key>')}")
        else:  # dict[str, dict[str, Model]]
            rows += section_rows(typing.get_args(inner)[-1],
                                 f"{key}.{DICT_KEYS.get(name, '<key>')}.{INNER_KEYS.get(name, '<key>')}")
    return rows


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models `model`'s fields hold (directly, in lists or in dicts), depth first, once each."""
    found: list[type[BaseModel]] = []
    for field in model.model_fields.values():
        inner = field.annotation if _is_model(field.annotation) else None
        container = _container_model(field.annotation)
        if container is not None:
            inner = container[1] if _is_model(container[1]) else typing.get_args(container[1])[-1]
        if inner is not None and inner not in found:
            found += [inner, *[m for m in nested_models(inner) if m not in found and m is not inner]]
    return found


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str, in_table: bool = True) -> str:
    """Text from a description or docstring: one line (pipes escaped in a table cell), and `<`
    outside code spans written as `&lt;`, so that `block:<type>/<name>` is no HTML tag."""
    spans = (_cell(text) if in_table else " ".join(text.split())).split("`")
    return "`".join(span if i % 2 else span.replace("<", "&lt;") for i, span in enumerate(spans))


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return " ".join(doc.split()) if doc else ""


def render_table(rows: list[Row]) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for row in rows:
        default = row.default if row.default in WORDS else f"`{_cell(row.default)}`"
        lines.append(f"| `{_cell(row.key)}` | `{_cell(row.type)}` | {default} | {_prose(row.description)} |")
    return "\n".join(lines)


def render_section(model: type[BaseModel], prefix: str) -> str:
    """One section: its heading, the model's docstring, the table, long defaults as YAML, and
    what the nested models are."""
    rows = section_rows(model, prefix)
    parts = [f"## {prefix}", ""]
    if _docstring(model):
        parts += [_prose(_docstring(model), in_table=False), ""]
    parts.append(render_table(rows))
    for row in rows:
        if row.long_default is not None:
            dumped = yaml.safe_dump(_plain(row.long_default), sort_keys=False, default_flow_style=None, width=100)
            parts += ["", f"Default of `{row.key}`:", "```yaml", dumped.rstrip(), "```"]
    described = [(m, _docstring(m)) for m in nested_models(model) if _docstring(m)]
    if described:
        parts += ["", *[f"- `{m.__name__}`: {_prose(doc, in_table=False)}" for m, doc in described]]
    return "\n".join(parts)


def render_families() -> str:
    """The registered model families: what `model.family` and `model.params.<family>` accept."""
    candidates = set(default_candidates())
    lines = ["### Registered model families", "",
             (f"`model.family` is `{AUTO}`, `{BLEND}` or one of these (mlpipe/core/families.py, simplest first). "
              "`model.params.<family>` overrides the family's defaults; every other estimator parameter keeps "
              "scikit-learn's default."), "",
             "| family | estimator | defaults | `auto` candidate |", "|---|---|---|---|"]
    for name in family_names():
        family = get_family(name)
        estimator = (family.estimator if isinstance(family.estimator, str)
                     else f"{family.estimator.__module__}.{family.estimator.__qualname__}")
        lines.append(f"| `{name}` | `{estimator}` | `{_cell(_flow(dict(family.defaults)))}` | "
                     f"{'yes' if name in candidates else 'no'} |")
    return "\n".join(lines)


def render(config: type[BaseModel] = PipelineConfig) -> str:
    """The whole reference, one section per field of `config`, in its field order."""
    sections = [name for name, field in config.model_fields.items() if _is_model(field.annotation)]
    parts = [
        "# Configuration reference",
        "",
        f"Generated from the config's Field descriptions by `{COMMAND}`; do not edit.",
        "",
        ("A config is a YAML file of these sections (`conf/churn.yaml`); a key left out takes its default "
         "(only the fields of an item you add to a list or mapping can be required), and an unknown key or a "
         "bad value fails at load time naming its key path and what is allowed. Any key can be set on the "
         "command line with `--set section.key=value` (the value is YAML: `0.8`, `true`, `[1, 2]`, `null`). "
         "Defaults are written as in YAML; `null` is an empty value. Keys with `[]` are fields of each item of "
         "a list, keys with `<...>` fields of each value of a mapping."),
        "",
        "Sections: " + ", ".join(f"[{name}](#{name})" for name in sections) + ".",
    ]
    for name in sections:
        parts += ["", render_section(config.model_fields[name].annotation, name)]
        if name == "model":
            parts += ["", render_families()]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
