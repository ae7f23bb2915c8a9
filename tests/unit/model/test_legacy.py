"""mlpipe.model.legacy: a model registered before the `mlpipe` package (tests/fixtures/
model_before_layout, saved at fff9bfc) still loads and predicts the numbers it predicted then,
both with the old code it ships and, in a process of mlpipe's, rebuilt from today's classes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "model_before_layout"

LOAD_AND_PREDICT = """
import json, sys
import pandas as pd
{setup}
import mlflow.pyfunc
model = mlflow.pyfunc.load_model({model!r})
out = model.predict(pd.read_csv({rows!r}))
inner = model.get_raw_model()
print(json.dumps({{"probability": out["probability"].tolist(), "label": out["label"].tolist(),
                  "classes": sorted({{type(step).__module__ + "." + type(step).__name__ for step in
                                     [inner, *[s for _, s in inner.steps]]}}),
                  "tasks_from": getattr(sys.modules.get("tasks.features"), "__file__", None)}}))
"""


def run_load_and_predict(model_dir: Path, setup: str = "") -> subprocess.CompletedProcess:
    """Load the model with mlflow.pyfunc in a fresh interpreter (outside the checkout, so no
    `tasks` folder is on its path) and predict rows.csv."""
    code = LOAD_AND_PREDICT.format(setup=setup, model=str(model_dir), rows=str(FIXTURE / "rows.csv"))
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)


def load_and_predict(model_dir: Path, setup: str = "") -> dict:
    """`run_load_and_predict`'s answers for rows.csv."""
    out = run_load_and_predict(model_dir, setup)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def expected() -> pd.DataFrame:
    return pd.read_csv(FIXTURE / "predictions.csv")


def test_the_fixture_names_the_old_module_paths():
    mlmodel = (FIXTURE / "MLmodel").read_text()
    assert "tasks.features.ModelPipeline" in mlmodel and "tasks.conform.Conform" in mlmodel
    assert "mlpipe" not in mlmodel


@pytest.mark.slow  # over 10 s
def test_a_pre_move_model_loads_with_the_code_it_ships_and_predicts_the_same():
    got = load_and_predict(FIXTURE)
    np.testing.assert_allclose(got["probability"], expected()["probability"], rtol=0, atol=1e-12)
    assert got["label"] == expected()["label"].tolist()
    assert got["tasks_from"].startswith(str(FIXTURE / "code" / "tasks"))


@pytest.mark.slow  # over 10 s
def test_in_mlpipe_a_pre_move_model_is_rebuilt_from_todays_classes(tmp_path):
    """As mlpipe's loader does (`alias_legacy_modules` before MLflow's): the old names are the
    modules of mlpipe.model, whose classes the skops file's state fills. Without the shipped
    code, so nothing but the aliases can resolve the old names."""
    bare = tmp_path / "model"
    shutil.copytree(FIXTURE, bare, ignore=shutil.ignore_patterns("code"))
    got = load_and_predict(bare, setup="from mlpipe.model.legacy import alias_legacy_modules; alias_legacy_modules()")
    np.testing.assert_allclose(got["probability"], expected()["probability"], rtol=0, atol=1e-12)
    assert got["label"] == expected()["label"].tolist()
    assert "mlpipe.model.features.ModelPipeline" in got["classes"]
    assert "mlpipe.model.conform.Conform" in got["classes"]
    assert got["tasks_from"] == str(Path(__import__("mlpipe").__file__).parent / "model" / "features.py")


def test_without_the_aliases_and_the_shipped_code_the_old_names_do_not_resolve(tmp_path):
    """The check above is not vacuous: installed, the project has no top-level `tasks`."""
    bare = tmp_path / "model"
    shutil.copytree(FIXTURE, bare, ignore=shutil.ignore_patterns("code"))
    out = run_load_and_predict(bare)
    assert out.returncode != 0 and "tasks" in out.stderr


def test_aliases_leave_an_imported_tasks_package_alone(monkeypatch):
    import types

    from mlpipe.model import legacy

    theirs = types.ModuleType("tasks")
    monkeypatch.setitem(sys.modules, "tasks", theirs)
    monkeypatch.delitem(sys.modules, "tasks.features", raising=False)
    legacy.alias_legacy_modules()
    assert sys.modules["tasks"] is theirs and "tasks.features" not in sys.modules


def test_registered_models_ship_the_library_and_trust_the_old_and_new_names():
    from mlpipe.adapters.mlflow.models import TRUSTED_TYPE_PREFIXES
    from mlpipe.core.paths import LIBRARY_ROOT

    assert {"mlpipe.model.features.", "mlpipe.model.conform.", "mlpipe.model.mlp.", "tasks.features.",
            "tasks.conform.", "tasks.mlp."} <= set(TRUSTED_TYPE_PREFIXES)
    assert (LIBRARY_ROOT / "model" / "features.py").is_file()
    assert json.dumps(TRUSTED_TYPE_PREFIXES)  # plain strings, as MLflow records them
