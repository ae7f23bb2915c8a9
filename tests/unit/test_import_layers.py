"""Import layers: the kernel modules import neither Prefect nor scikit-learn, a default
`PipelineConfig()` builds without them, and no module of tasks/ imports another that imports it
back (function-level imports included: hiding a cycle in a function does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Prefect-free and scikit-learn-free: configuration, errors, families, storage and the split.
KERNEL = ["tasks.errors", "tasks.config_sections", "tasks.config_model", "tasks.config", "tasks.families",
          "tasks.csv_dialect", "tasks.storage", "tasks.splitting", "tasks.data_sources"]

BLOCKED = ("prefect", "sklearn")

# Prefect-free, with scikit-learn: the conform step (it ships inside models), drift statistics and
# evaluation's units of work (Ray workers unpickle them).
KERNEL_WITH_SKLEARN = ["tasks.conform", "tasks.drift", "tasks.features", "tasks.permutation",
                       "tasks.evaluation_units"]


def test_kernel_modules_and_a_default_config_need_neither_prefect_nor_sklearn(python_without):
    script = "\n".join(f"import {module}" for module in KERNEL) + """
from tasks.config import PipelineConfig
config = PipelineConfig()
assert config.model.family == 'auto' and config.tuning.spaces
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'sklearn')))
"""
    result = python_without(script, BLOCKED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"


def test_kernel_modules_with_sklearn_need_no_prefect(python_without):
    result = python_without("\n".join(f"import {module}" for module in KERNEL_WITH_SKLEARN) + "\nprint('ok')",
                            ("prefect",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_blocker_really_blocks(python_without):
    # the guard above would pass vacuously if blocking did nothing
    result = python_without("import tasks.data\n", BLOCKED)
    assert result.returncode != 0 and "prefect is blocked" in result.stderr


def _imports_of(path: Path) -> set[str]:
    """The tasks.* modules a file imports, at any depth of its code (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tasks"):
            if node.module == "tasks":
                found.update(f"tasks.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tasks."))
    return found


def _module_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports_of(path)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_the_modules_of_tasks():
    assert _cycle(_module_graph()) is None, " -> ".join(_cycle(_module_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
