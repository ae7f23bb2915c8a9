"""docs/configuration.md is generated from the config models (mlpipe/core/config_reference.py)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mlpipe.core.config import PipelineConfig
from mlpipe.core.config_reference import (
    COMMAND,
    render,
    render_section,
    section_rows,
    type_name,
)

ROOT = Path(__file__).resolve().parents[3]


def test_the_page_is_current():
    page = ROOT / "docs" / "configuration.md"
    assert page.is_file(), f"docs/configuration.md is missing: run `{COMMAND}`"
    assert page.read_text() == render(), f"docs/configuration.md is stale: run `{COMMAND}`"


def _field_paths(model: type[BaseModel], prefix: str) -> list[str]:
    """Every field's dotted path, nested models (not lists or dicts of them) recursed."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(f"{prefix}.{name}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _field_paths(field.annotation, f"{prefix}.{name}")
    return paths


def test_every_field_of_every_section_is_listed():
    page = render()
    sections = list(PipelineConfig.model_fields)  # whatever sections the config has, in its order
    positions = [page.index(f"\n## {name}\n") for name in sections]
    assert positions == sorted(positions), "sections out of the config's field order"
    missing = [path for name in sections
               for path in _field_paths(PipelineConfig.model_fields[name].annotation, name)
               if f"| `{path}` |" not in page]
    assert not missing, f"fields missing from the reference: {missing}"
    for nested in ("features.ratios[].numerator", "features.buckets[].edges", "tuning.spaces.<family>.<param>.low"):
        assert f"| `{nested}` |" in page


def test_described_fields_carry_their_description():
    page = render()
    assert "| `data.csv.delimiter` | `str` | `auto` | auto (detect , ; tab \\|), or the one character" in page
    assert "| `data.csv.decimal` | `. \\| ,` | `.` |" in page
    assert "| `split.time_column` | `str \\| None` | `null` |" in page
    assert "block:&lt;type>/&lt;name>" in page  # not an HTML tag


class Knobs(BaseModel):
    """Made up for this test."""

    depth: int = Field(3, ge=1, description="How deep")


class MadeUp(BaseModel):
    """A section no config has."""

    dial: float | None = Field(None, description="A made-up field")
    mode: Literal["fast", "tab", "\t"] = "fast"
    tags: list[str] = Field(default_factory=lambda: ["a", "b"], description="Some | pipes")
    knobs: Knobs = Field(default_factory=Knobs, description="Nested")
    many: list[Knobs] = Field(default_factory=list)
    named: dict[str, Knobs] = Field(default_factory=lambda: {f"k{i}": Knobs(depth=i + 1) for i in range(9)})
    must: str


def test_a_made_up_field_is_rendered_through_the_same_walker():
    rows = {row.key: row for row in section_rows(MadeUp, "made_up")}
    assert list(rows) == ["made_up.dial", "made_up.mode", "made_up.tags", "made_up.knobs", "made_up.knobs.depth",
                          "made_up.many", "made_up.many[].depth", "made_up.named", "made_up.named.<key>.depth",
                          "made_up.must"]
    assert (rows["made_up.dial"].type, rows["made_up.dial"].default, rows["made_up.dial"].description) == (
        "float | None", "null", "A made-up field")
    assert rows["made_up.mode"].type == "fast | tab | tab"
    assert rows["made_up.tags"].default == "[a, b]"
    assert rows["made_up.knobs.depth"].type == "int (>= 1)"
    assert rows["made_up.must"].default == "required" and rows["made_up.must"].description == ""
    assert rows["made_up.named"].default == "below"

    section = render_section(MadeUp, "made_up")
    assert section.startswith("## made_up\n\nA section no config has.\n")
    assert "| `made_up.tags` | `list[str]` | `[a, b]` | Some \\| pipes |" in section
    assert "| `made_up.must` | `str` | required |  |" in section
    assert "Default of `made_up.named`:\n```yaml\nk0: {depth: 1}\n" in section
    assert "- `Knobs`: Made up for this test." in section


def test_a_made_up_config_renders_one_section_per_field():
    class Config(BaseModel):
        first: MadeUp
        second: Knobs = Field(default_factory=Knobs)

    page = render(Config)
    assert page.index("\n## first\n") < page.index("\n## second\n")
    assert "| `second.depth` | `int (>= 1)` | `3` | How deep |" in page


def test_type_names_are_readable():
    assert type_name(int | None) == "int | None"
    assert type_name(typing.Optional[list[str]]) == "list[str] | None"  # noqa: UP045
    assert type_name(dict[str, typing.Any]) == "dict[str, Any]"
    assert type_name(Literal["auto", ",", ";", "\t", "|"]) == "auto | , | ; | tab | |"


def test_rendering_imports_no_prefect_or_scikit_learn():
    code = ("import sys; from mlpipe.core.config_reference import render; render(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'sklearn', 'mlflow', 'ray', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
