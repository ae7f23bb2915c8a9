"""The module paths models registered before the `mlpipe` package name their classes by.

A model saved before the layout change holds `tasks.features.ModelPipeline`,
`tasks.conform.Conform` and, for the mlp family, `tasks.mlp.MLPNetClassifier`, and ships its own
copy of that old `tasks/` folder (`code_paths`). Where mlpipe itself loads a model (promotion's
re-scoring, batch scoring, drift), `alias_legacy_modules` makes those names the current modules,
so an old champion is rebuilt from today's classes and is one kind of object with the models a
run fits (`isinstance` checks hold, and one copy of the code is in memory). A process without
mlpipe's aliases (`mlflow models serve`, a plain `mlflow.pyfunc.load_model`) loads the copy the
model ships. Installing the project adds no top-level `tasks` package: the old names exist only
here, as entries of `sys.modules`.
"""

from __future__ import annotations

import importlib
import sys
import types

LEGACY_MODULES = {
    "tasks.conform": "mlpipe.model.conform",
    "tasks.features": "mlpipe.model.features",
    "tasks.mlp": "mlpipe.model.mlp",
}
LEGACY_TYPE_PREFIXES = tuple(f"{old}." for old in LEGACY_MODULES)


def alias_legacy_modules() -> None:
    """Make `tasks.conform`, `tasks.features` and `tasks.mlp` importable as today's modules.
    A `tasks` package that is already imported (a model's shipped copy, say) is left alone."""
    if "tasks" in sys.modules and not getattr(sys.modules["tasks"], "__mlpipe_legacy__", False):
        return
    parent = sys.modules.setdefault("tasks", types.ModuleType("tasks", "mlpipe's legacy module names"))
    parent.__mlpipe_legacy__ = True
    parent.__path__ = []  # a package: its submodules are the entries below, nothing is found on disk
    for old, new in LEGACY_MODULES.items():
        module = importlib.import_module(new)
        sys.modules.setdefault(old, module)
        setattr(parent, old.rsplit(".", 1)[1], module)
