"""MLflow models: log a fitted pipeline (skops with an explicit list of trusted types, a
signature, an input example), register it with its lineage, find the version an identical run
registered, load a version, and read the input schema a version declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlpipe.adapters.mlflow.tracking import (
    client,
    ensure_experiment,
    log_run_artifacts,
    log_step_metrics,
    owner_tags,
    tracking_uri,
)
from mlpipe.core.lineage import LINEAGE_KEY, Lineage
from mlpipe.core.paths import LIBRARY_ROOT
from mlpipe.model.boosters import REQUIREMENTS
from mlpipe.model.legacy import LEGACY_TYPE_PREFIXES, alias_legacy_modules

# Models ship the mlpipe/ folder (`code_paths`); these prefixes name what their skops files may
# hold. Models saved before the `mlpipe` package name the same classes under `tasks.` (legacy.py).
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "mlpipe.model.features.", "mlpipe.model.conform.", "mlpipe.model.mlp.",
                         "mlpipe.model.boosters.", "builtins.", *LEGACY_TYPE_PREFIXES)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    reused: bool  # True when an identical earlier run's version was found instead


class _NoTorchShim:
    """A meta-path finder that refuses scikit-learn's array-API shim for torch."""

    name = "sklearn.externals.array_api_compat.torch"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise ImportError(f"{self.name} is not needed to list scikit-learn's estimators")
        return None


def skops_io():
    """`skops.io`, imported without torch. skops lists the estimator types it trusts with
    scikit-learn's `all_estimators()`, whose package walk imports every sklearn package, the
    array-API shim for torch among them, and that imports torch: about 1 s and 200 MB of every
    registration where torch is installed, although the walk then skips `externals`. The shim
    is refused while skops imports (the walk passes over a package that fails to import); the
    trusted list is the same, and the shim imports normally afterwards."""
    import sys

    if "skops.io" not in sys.modules and "torch" not in sys.modules:
        shim = _NoTorchShim()
        sys.meta_path.insert(0, shim)
        try:
            import skops.io  # noqa: F401
        finally:
            sys.meta_path.remove(shim)
    import skops.io

    return skops.io


def trusted_types(model) -> list[str]:
    """The types skops must trust to load `model`, checked against our allow-list so a
    surprising type (something that could run code on load) fails at save time, not in prod."""
    io = skops_io()
    untrusted = io.get_untrusted_types(data=io.dumps(model))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise ValueError(f"model holds types outside the skops allow-list: {refused}")
    return sorted(untrusted)


def model_signature(columns: list[str]):
    """Every input column by name, typed `Any` and optional; outputs `probability` (double) and
    `label` (long).

    The model conforms raw values itself (`mlpipe.model.conform`), so the signature names the
    columns and leaves their values to the model: a `double` column would refuse int64 frames
    and numbers stored as text, a `long` one floats with gaps, and both the blanks real exports
    hold. The columns are optional so that the model's own check refuses a missing one: its
    message names every missing column in one short sentence, where MLflow's schema check puts
    them after a printout of the input and the whole schema."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(AnyType(), name, required=False) for name in columns]),
                          outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]))


def input_example(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as a client sends them (JSON-friendly: None for missing values)."""
    return frame.astype(object).where(frame.notna(), None)


def _pip_requirements(types: list[str]) -> list[str]:
    """What loading the model needs: the fixed set, plus a boosting library the model's types name."""
    from importlib.metadata import version

    libraries = sorted({REQUIREMENTS[t.rsplit(".", 1)[1]] for t in types
                        if t.startswith("mlpipe.model.boosters.") and t.rsplit(".", 1)[1] in REQUIREMENTS})
    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "pandas", *libraries)]


@contextlib.contextmanager
def _requirements_read_from_this_environment() -> Iterator[None]:
    """While logging a model whose requirements `_pip_requirements` read from the installed
    versions. MLflow checks them against the installed versions twice (saving, then loading the
    model back to validate the input example), which cannot find a mismatch and first maps every
    installed distribution's files to its modules: 0.4-0.5 s of each registering process here
    (torch alone lists thousands of files). Skipped for that call only; a later load with
    `mlflow.pyfunc` (another environment, say) still checks."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    callers = [module for module in (environment, mlflow.pyfunc) if hasattr(module, name)]  # none: another MLflow
    checks = [getattr(module, name) for module in callers]
    for module in callers:
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, check in zip(callers, checks):
            setattr(module, name, check)


# What a model version carries besides its lineage: what people filter versions on, and what a later
# run reads back (the split, to compare on rows neither model trained on). Every other tag of the run
# (selection, tuning, evaluation, Ray) stays on the run; the model card tells the rest.
VERSION_TAGS = ("mlpipe.model_family", "mlpipe.split", "mlpipe.dataset_prefix", "mlpipe.dataset_superseded")


def log_and_register(
    *,
    model,
    model_name: str,
    experiment: str,
    run_name: str,
    example: pd.DataFrame,
    params: dict[str, str],
    metrics: dict[str, float],
    plots: dict[str, bytes],
    extra_json: dict[str, Any],
    config_yaml: str,
    lineage: Lineage,
    extra_tags: dict[str, str] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    step_metrics: list[dict[str, float]] | None = None,
) -> RegisteredVersion:
    """One MLflow run with params, metrics, plots, config and tables (name -> rows, logged as
    MLflow table artifacts `<name>.json`); the model logged with skops (explicit trusted
    types), signature and input example; then registered with the lineage and `VERSION_TAGS`."""
    import mlflow

    experiment_id = ensure_experiment(experiment)
    tags = {**lineage.tags(), **(extra_tags or {})}  # all on the run; the version keeps VERSION_TAGS
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**tags, **owner_tags()}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if step_metrics:
            log_step_metrics(run.info.run_id, step_metrics)
        log_run_artifacts(extra_json, plots=plots, config_yaml=config_yaml, tables=tables)
        types = trusted_types(model)
        with _requirements_read_from_this_environment():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=model_signature(list(example.columns)),
                input_example=input_example(example.head(3)),
                serialization_format="skops",
                skops_trusted_types=types,
                pip_requirements=_pip_requirements(types),
                code_paths=[str(LIBRARY_ROOT)],
            )
        version = mlflow.register_model(info.model_uri, model_name, await_registration_for=300,
                                        tags={k: v for k, v in tags.items() if k in {*lineage.tags(), *VERSION_TAGS}})
    return RegisteredVersion(model_name, str(version.version), run.info.run_id, reused=False)


def find_version_by_lineage(name: str, lineage_key: str) -> RegisteredVersion | None:
    """The model version an identical earlier run registered, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_model_versions(
            f"name = '{name}' and tags.`{LINEAGE_KEY}` = '{lineage_key}'", max_results=5)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code):
            return None
        raise
    complete = [v for v in found if v.status == "READY"]
    if not complete:
        return None
    first = min(complete, key=lambda v: int(v.version))
    return RegisteredVersion(name, str(first.version), first.run_id or "", reused=True)


def load_version(name: str, version: str):
    """Load a registered sklearn Pipeline (skops, with the trusted types recorded at save)."""
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri())
    skops_io()  # before MLflow's loader imports it
    alias_legacy_modules()  # a version saved before the `mlpipe` package: today's classes
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def model_input_schema(name: str, version: str) -> list[tuple[str, str]]:
    """(column, MLflow type name) for each input column in the version's signature, in order:
    e.g. ("tenure", "double"), ("contract", "string")."""
    import mlflow
    from mlflow.models import get_model_info
    from mlflow.types import DataType

    mlflow.set_tracking_uri(tracking_uri())
    signature = get_model_info(f"models:/{name}/{version}").signature
    inputs = signature.inputs if signature is not None else None
    if inputs is None or inputs.is_tensor_spec() or not inputs.has_input_names():
        raise ValueError(f"{name} v{version} has no column signature: it cannot be scored row by row "
                         "(register it with a signature from a DataFrame)")
    return [(spec.name, spec.type.name if isinstance(spec.type, DataType) else str(spec.type))
            for spec in inputs.inputs]
