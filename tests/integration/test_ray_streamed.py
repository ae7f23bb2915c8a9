"""compute.stream on a real local Ray: the table read into a Ray Dataset in blocks, split block
by block with the local rule (the same rows in the holdout both ways), the booster trained on
Ray Train over the transformed blocks, the registered model of the local shape, scored block by
block within 0.005 roc_auc of the local fit on the same rows. The out-of-core proof on two
Ray nodes is tests/integration/test_ray_two_nodes.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STREAM = ("compute.backend=ray", "compute.stream=true", "compute.ray_worker_cpus=0.5", "model.family=xgboost",
          "model.params.xgboost.num_workers=2", "model.params.xgboost.n_jobs=1",
          "model.params.xgboost.n_estimators=80", "model.params.xgboost.max_depth=4")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for this module's tests, shut down after the last."""
    from mlpipe.adapters import ray_cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        with ray_cluster.session(num_cpus=2) as session:
            yield session


def _config(data: Path, *overrides: str):
    from mlpipe.core.config import load_config

    return load_config(ROOT / "conf" / "churn.yaml", [*STREAM, "evaluation.cv_folds=2", *overrides], str(data))


def _local_split(config):
    from mlpipe.data.reader import read_dataset
    from mlpipe.data.splitting import split_validated
    from mlpipe.data.validation import validate_dataset

    validated = validate_dataset(read_dataset(config.data.uri), config.data, config.min_class_rows())
    return validated, split_validated(validated, config.split)


def _coarse_table(n: int = 4000) -> pd.DataFrame:
    """Few coarse columns: most rows repeat another (content keys numbered across the table),
    a missing-value token, unlabeled rows."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"customer_id": [f"C{i:05d}" for i in range(n)],
                          "contract": rng.choice(["monthly", "yearly", "?"], n),
                          "tenure": rng.integers(0, 5, n), "monthly_charges": rng.integers(1, 4, n) * 10.0,
                          "churn": rng.choice(["Yes", "No"], n, p=[0.3, 0.7]).astype(object)})
    frame.loc[rng.choice(n, 8, replace=False), "churn"] = None
    return frame


@pytest.mark.parametrize("keyed_on", ["id", "content"])
def test_a_row_is_holdout_in_blocks_on_ray_iff_it_is_holdout_locally(keyed_on, tmp_path, local_ray):
    from mlpipe.adapters import ray_data
    from mlpipe.data.blocks import HOLDOUT, KEY
    from mlpipe.stages.streamed import read_streamed

    path = tmp_path / "coarse.parquet"
    frame = _coarse_table()
    frame.to_parquet(path, row_group_size=500)
    ids = "[customer_id]" if keyed_on == "id" else "[]"
    drop = "[]" if keyed_on == "id" else "[customer_id]"  # content keys: the ID column would make rows unique
    config = _config(path, f"data.id_columns={ids}", f"data.drop_columns={drop}", "data.min_rows=100")
    validated, local = _local_split(config)
    table = read_streamed(config)
    streamed = ray_data.to_frame(table.rows)
    holdout = streamed[streamed[HOLDOUT]]
    assert sorted(holdout[KEY].tolist()) == sorted(local.holdout_keys.tolist())
    assert len(streamed) == len(local.train) + len(local.holdout) == len(frame) - 8
    if keyed_on == "id":
        assert sorted(holdout["customer_id"]) == sorted(frame.loc[local.holdout.index, "customer_id"])
    else:  # identical rows are interchangeable; the repeated ones were numbered across the table
        assert streamed[KEY].nunique() == len(streamed)
    assert table.rule.unlabeled == validated.report.unlabeled_rows == 8
    assert table.statistics.tokens == validated.report.missing_tokens


# both stop early: xgboost on validation shards, LightGBM's workers on the validation rows whole
FAMILIES = {"xgboost": ("model.params.xgboost.early_stopping_rounds=15",),
            "lightgbm": ("model.family=lightgbm", "model.params.lightgbm.num_workers=2",
                         "model.params.lightgbm.early_stopping_rounds=15",
                         "model.params.lightgbm.n_jobs=1", "model.params.lightgbm.n_estimators=80",
                         "model.params.lightgbm.num_leaves=15")}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_streamed_fit_has_the_local_shape_and_auc(family, tmp_path, local_ray, generate_churn):
    from sklearn.metrics import roc_auc_score

    from mlpipe.model.boosters import LightGBMClassifier, XGBoostClassifier
    from mlpipe.model.features import build_preprocessor, feature_spec
    from mlpipe.stages.streamed import fit_streamed
    from mlpipe.stages.training import fit_model

    path = tmp_path / "churn.parquet"
    generate_churn(rows=20_000, seed=5).to_parquet(path, row_group_size=4000)
    config = _config(path, *FAMILIES[family], "compute.stream_sample_rows=5000")
    fitted = fit_streamed(config)
    model = fitted.model
    assert [name for name, _ in model.steps] == ["conform", "features", "model"]
    kind = XGBoostClassifier if family == "xgboost" else LightGBMClassifier
    assert type(model[-1]) is kind and isinstance(model[-1].booster_, bytes if family == "xgboost" else str)
    assert model[-1].ray_train_run_["mlpipe.ray_train_run"].startswith(f"{family}-")

    validated, local_split = _local_split(config)
    assert len(fitted.labels) == len(local_split.holdout)  # every holdout row scored, on Ray, block by block
    assert fitted.split.params == local_split.params and fitted.split.train.empty
    assert set(fitted.split.holdout_keys) <= set(local_split.holdout_keys)  # the bounded sample of it
    local_config = config.model.model_copy(update={"params": {family: {
        **config.model.params[family], "num_workers": 0}}})
    report = validated.report
    spec = feature_spec(report.numeric_features, report.categorical_features, config.features,
                        list(config.data.na_values), {c: sorted(t) for c, t in report.auto_na_values.items()})
    assert spec.columns == fitted.spec.columns
    local = fit_model(local_split.train, "churn", spec, build_preprocessor(spec, config.features), local_config)
    holdout = local_split.holdout
    auc_local = roc_auc_score(holdout["churn"], local.predict_proba(holdout[spec.columns])[:, 1])
    auc_streamed = roc_auc_score(fitted.labels, fitted.scores)
    print(f"{family}: roc_auc streamed {auc_streamed:.4f}, local {auc_local:.4f}")
    assert auc_streamed > 0.75 and abs(auc_streamed - auc_local) < 0.005, (auc_streamed, auc_local)

    raw = pd.read_parquet(path).drop(columns=["churn"]).head(300)  # raw rows, as a client sends them
    served = model.predict(raw)["probability"].to_numpy()
    features = np.asarray(model[:-1].transform(raw), dtype="float64")
    np.testing.assert_allclose(served, _booster_itself(family, model[-1].booster_, features), atol=1e-6)


def _booster_itself(family: str, saved, features: np.ndarray) -> np.ndarray:
    """What the library's own booster, loaded from the saved model, predicts."""
    if family == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_str=saved).predict(features)
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(saved))
    return booster.predict(xgboost.DMatrix(features), validate_features=False)


@pytest.mark.usefixtures("prefect_server")
def test_train_with_compute_stream_registers_a_model_that_serves_raw_rows(workspace, tmp_path, local_ray,
                                                                          generate_churn):
    import mlflow
    from mlflow import MlflowClient

    from mlpipe.flows.training import train

    path = tmp_path / "churn.parquet"
    generate_churn(rows=6000, seed=8).to_parquet(path)
    summary = train(config=_config(path, "evaluation.permutation_repeats=1", "promotion.min_value=0.7"))
    assert summary.decision.alias == "champion" and summary.metrics["roc_auc"] > 0.8
    assert {"cv_roc_auc_mean", "pr_auc", "log_loss", "brier"} <= set(summary.metrics)
    client = MlflowClient()
    version = client.get_model_version_by_alias("churn-classifier", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags["mlpipe.streamed"] == "true" and run.data.tags["mlpipe.model_family"] == "xgboost"
    assert run.data.params["compute.stream"] == "true"
    raw = pd.read_parquet(path).drop(columns=["churn"]).head(200)
    served = mlflow.pyfunc.load_model("models:/churn-classifier@champion").predict(raw)
    assert list(served.columns) == ["probability", "label"] and served["probability"].nunique() > 50

    # a second model (fewer rounds), its feature steps fitted on a 1,000-row sample: the champion
    # comparison is on every holdout row of the table (scored block by block), not the sample's few
    from mlpipe.adapters.mlflow import aliases

    config = _config(path, "evaluation.permutation_repeats=1", "promotion.min_value=0.7",
                     "compute.stream_sample_rows=1000", "model.params.xgboost.n_estimators=60")
    second = train(config=config)
    _, local_split = _local_split(config)
    decision = second.decision
    assert decision.champion_version == "1" and decision.comparison_rows == len(local_split.holdout)
    assert decision.comparison_rows > 3 * (1000 * config.split.holdout_fraction)  # more than the sample held
    assert abs(decision.candidate_comparison_score - second.metrics["roc_auc"]) < 1e-9  # the same rows: all
    assert decision.champion_score is not None and "same hash split" in decision.comparison_basis
    entry = aliases.promotion_history("churn-classifier")[-1]
    compared = {int(k, 16) for k in aliases.comparison_keys(entry["run_id"])}
    assert compared == {int(k) for k in local_split.holdout_keys}
