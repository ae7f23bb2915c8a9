"""Registered model versions: which version a number or alias names, the run that logged a
version, and a version's tags and descriptions (what batch scoring, drift checks, promotion
and the model card read and write).
"""

from __future__ import annotations

from typing import Any

from mlpipe.adapters.mlflow.tracking import client


class ModelLookupError(LookupError):
    """The registered model, version or alias asked for does not exist (never retried)."""


_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def resolve_model_version(name: str, ref: str) -> str:
    """The version number `ref` names: a version number ("3") or an alias ("champion").

    Unlike `aliases.alias_version`, only "not found" becomes a `ModelLookupError`; any other
    tracking error propagates, so an unreachable server is retried instead of reported as a
    missing alias.
    """
    from mlflow.exceptions import MlflowException

    ref = ref.strip()
    by_number = ref.isdigit()
    try:
        if by_number:
            return str(client().get_model_version(name, str(int(ref))).version)
        return str(client().get_model_version_by_alias(name, ref).version)
    except MlflowException as error:
        if str(error.error_code) not in _NOT_FOUND_CODES:
            raise
        if "Registered Model with name" in str(error):
            raise ModelLookupError(f"model {name!r} is not registered: train it first") from None
        what = f"version {int(ref)}" if by_number else f"alias {ref!r}"
        raise ModelLookupError(f"model {name!r} has no {what}; pass an existing version number or "
                               "alias (champion, challenger)") from None


def version_run_id(name: str, version: str) -> str:
    """The MLflow run that logged model version `name` v`version`."""
    run_id = client().get_model_version(name, version).run_id
    if not run_id:
        raise ValueError(f"{name} v{version} has no MLflow run: it was not registered by this pipeline")
    return run_id


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of a model version (lineage, split parameters, promotion decision)."""
    return dict(client().get_model_version(name, version).tags)


def tag_version(name: str, version: str, tags: dict[str, Any]) -> None:
    """Set tags on a model version (values as text)."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))


def describe_version(name: str, version: str, markdown: str) -> None:
    """Set a model version's description (the MLflow UI renders it as markdown)."""
    client().update_model_version(name, version, description=markdown)


def version_description(name: str, version: str) -> str:
    """A model version's description ("" when it has none)."""
    return client().get_model_version(name, version).description or ""


def describe_model(name: str, markdown: str) -> None:
    """Set the registered model's description."""
    client().update_registered_model(name, description=markdown)
