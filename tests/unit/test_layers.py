"""The layers, checked by folder: every module of mlpipe/, tasks/, flows/ and deployments/ is
read (AST, imports at any depth, TYPE_CHECKING blocks included) and its imports must point down.
A new module is covered by the folder it is in; no list of modules to keep.

    core < model < data < compute < adapters < stages < tasks < flows, deployments < cli

- nothing under mlpipe/ imports Prefect, except cli/ (the command that runs the flows);
- MLflow and Ray are imported by mlpipe/adapters/ only;
- model/ (what ships inside every registered model) imports, at module level, nothing but core
  and model, and never MLflow, Ray, Prefect or torch. Only the mlp's training path (code inside
  a function, which loading a model never runs) may reach torch, compute (the torch loop) and
  the Ray adapter; and the conform step may import MLflow's exception types inside a function
  (its refusals are `MlflowException`s too, which `mlflow models serve` passes to clients);
- core/ and data/ import no adapter; compute/ neither (its callers pass the Ray runner in);
- tasks/ import no flows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["core", "model", "data", "compute", "adapters", "stages", "tasks", "flows", "deployments", "cli"]
RANK = {"core": 0, "model": 1, "data": 2, "compute": 3, "adapters": 4, "stages": 5, "tasks": 6, "flows": 7,
        "deployments": 7, "cli": 8}
ONLY_IN = {"prefect": {"tasks", "flows", "deployments", "cli"}, "mlflow": {"adapters"}, "ray": {"adapters"}}
MODEL_TRAINING_PATH = {"torch", "compute", "adapters"}  # what the mlp's fit may import inside a function
MODEL_SERVING_ERRORS = ("mlflow.exceptions", "mlflow.protos.databricks_pb2")  # what conform may, inside a function


def layer_of_module(name: str) -> str | None:
    """The layer of an imported module name: mlpipe.<layer>..., or None for a third party."""
    parts = name.split(".")
    if parts[0] != "mlpipe" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def layer_of_file(path: Path) -> str:
    top = path.relative_to(ROOT).parts
    return top[1] if top[0] == "mlpipe" else top[0]


def code_files() -> list[Path]:
    files = [p for folder in ("mlpipe", "tasks", "flows", "deployments") for p in sorted((ROOT / folder).rglob("*.py"))]
    return [p for p in files if p.name != "__init__.py" or p.parent.name != "mlpipe"]


def imports(path: Path, source: str | None = None) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import in the file (or in `source`, as if it were)."""
    tree = ast.parse(path.read_text() if source is None else source)
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if node is not fn}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in nested))
            if layer_of_module(node.module) is None and node.module == "mlpipe":
                found += [(f"mlpipe.{alias.name}", id(node) in nested) for alias in node.names]
    return found


def violations(path: Path, source: str | None = None) -> list[str]:
    layer = layer_of_file(path)
    found = []
    for module, in_function in imports(path, source):
        top, target = module.split(".")[0], layer_of_module(module)
        if top in ONLY_IN and layer not in ONLY_IN[top]:
            allowed = top in MODEL_TRAINING_PATH or module in MODEL_SERVING_ERRORS
            if not (layer == "model" and in_function and allowed):
                found.append(f"{module} (only {', '.join(sorted(ONLY_IN[top]))} may import {top})")
        if layer == "model" and top == "torch" and not in_function:
            found.append(f"{module} at module level (torch only inside the mlp's training path)")
        if target is None:
            continue
        if RANK[target] > RANK[layer]:
            if layer == "model" and in_function and target in MODEL_TRAINING_PATH:
                continue
            found.append(f"{module} ({target} is above {layer})")
        if layer in ("core", "data", "compute") and target == "adapters":
            found.append(f"{module} ({layer} imports no adapter)")
        if layer == "deployments" and target in ("flows", "cli"):
            found.append(f"{module} (deployments import no {target})")
    return [f"{path.relative_to(ROOT)}: {text}" for text in found]


def test_every_module_is_in_a_known_layer():
    unknown = [str(p.relative_to(ROOT)) for p in code_files() if layer_of_file(p) not in RANK]
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_imports_point_down():
    found = [line for path in code_files() for line in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("layer, source, expected", [
    ("core", "from mlpipe.adapters.mlflow import models\n", "core imports no adapter"),
    ("core", "from mlpipe.stages.training import fit_model\n", "stages is above core"),
    ("data", "import mlflow\n", "only adapters may import mlflow"),
    ("compute", "def f():\n    from mlpipe.adapters.ray_cluster import run_tasks\n", "compute imports no adapter"),
    ("model", "import torch\n", "torch only inside"),
    ("model", "def f():\n    import mlflow.pyfunc\n", "only adapters may import mlflow"),
    ("model", "from mlpipe.adapters import ray_cluster\n", "adapters is above model"),
    ("stages", "from prefect import task\n", "may import prefect"),
    ("tasks", "from mlpipe.flows.training import train\n", "flows is above tasks"),
])
def test_a_wrong_import_is_caught(layer, source, expected):
    folder = ROOT / layer if layer in ("tasks", "flows", "deployments") else ROOT / "mlpipe" / layer
    found = violations(folder / "new_module.py", source)
    assert any(expected in line for line in found), found


def test_the_model_training_path_may_reach_torch_and_the_ray_adapter_inside_a_function():
    path = ROOT / "mlpipe" / "model" / "mlp.py"
    assert any(module == "torch" and inside for module, inside in imports(path))
    assert violations(path) == []


def test_a_default_config_and_the_reader_need_neither_prefect_nor_sklearn(python_without):
    """What the AST cannot see: the config checks model families by name (no scikit-learn
    import), so a command fails on a bad config in the time it takes to import pydantic."""
    script = """
import mlpipe.core.config, mlpipe.data.reader, mlpipe.data.splitting, mlpipe.data.sources
from mlpipe.core.config import PipelineConfig
config = PipelineConfig()
assert config.model.family == 'auto' and config.tuning.spaces
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'sklearn')))
"""
    result = python_without(script, ("prefect", "sklearn"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"
    blocked = python_without("import mlpipe.tasks.data\n", ("prefect", "sklearn"))  # the blocker blocks
    assert blocked.returncode != 0 and "prefect is blocked" in blocked.stderr


MAX_FUNCTION_LINES = 60


def test_no_function_is_over_60_lines():
    """A long function is several steps that want names (flows, tasks and the library alike)."""
    long = []
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def modules_in_architecture_doc() -> set[str]:
    """The files docs/architecture.md's module tree names, as paths (two spaces a level)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Modules", 1)[1].split("```")[1]
    found, folders = set(), []
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0]
        if not name or not (name.endswith("/") or name.endswith(".py")):
            continue  # a description's second line
        depth = (len(line) - len(line.lstrip())) // 2
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            found.add("/".join([*folders, name]))
    return found


def test_the_architecture_doc_names_every_module_and_no_other():
    """docs/architecture.md maps the tree one line per module: kept true here."""
    on_disk = {p.relative_to(ROOT).as_posix() for folder in ("mlpipe", "tasks", "flows", "deployments")
               for p in (ROOT / folder).rglob("*.py")}
    documented = modules_in_architecture_doc()
    assert not on_disk - documented, f"modules missing from docs/architecture.md: {sorted(on_disk - documented)}"
    assert not documented - on_disk, f"docs/architecture.md names modules that do not exist: {sorted(documented - on_disk)}"
