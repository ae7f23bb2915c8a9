"""The `train` flow end to end: real Prefect test server, real MLflow SQLite store."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from mlpipe.adapters.mlflow import aliases
from mlpipe.data.splitting import SplitParams
from mlpipe.data.validation import DataValidationError
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")
MODEL = "churn-classifier"
LINEAGE_TAGS = ("mlpipe.dataset_uri", "mlpipe.dataset_fingerprint", "mlpipe.config_hash",
                "mlpipe.code_version", "mlpipe.prefect_flow_run_id", "mlpipe.lineage_key")


def raw_rows(csv_path, n=30) -> pd.DataFrame:
    """Rows as a caller would send them: no target, with gaps and a category never seen."""
    rows = pd.read_csv(csv_path).drop(columns=["churn"]).head(n).reset_index(drop=True)
    rows["total_charges"] = rows["total_charges"].astype(object)
    rows.loc[6, "total_charges"] = " "             # numbers stored as text, with a blank, as in exports
    rows.loc[0:2, "tenure"] = np.nan               # gap in an integer column
    rows.loc[3, "contract"] = "Quarterly"          # unseen category
    rows.loc[4, "payment_method"] = None           # missing category
    rows.loc[5, "monthly_charges"] = np.nan
    return rows


def test_train_registers_champion_with_lineage_and_serves_raw_rows(workspace, fast_config, small_churn_csv):
    state = train(config=fast_config(), return_state=True)
    summary = state.result()

    assert summary.version == "1" and summary.decision.alias == "champion" and summary.decision.promoted
    assert summary.metrics["roc_auc"] > 0.8
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1"
    for tag in LINEAGE_TAGS:
        assert champion.tags.get(tag), f"missing lineage tag {tag}"
    assert champion.tags["mlpipe.dataset_fingerprint"].startswith("sha256:")
    assert champion.tags["mlpipe.prefect_flow_run_id"] == str(state.state_details.flow_run_id)
    assert champion.tags["promotion.alias"] == "champion"
    assert champion.tags["mlpipe.model_family"] == "hist_gradient_boosting"  # a fixed family is tagged too
    assert "no champion yet" in champion.tags["promotion.reason"]

    run = client.get_run(champion.run_id)
    assert run.data.params["model.family"] == "hist_gradient_boosting"
    assert {"roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier",
            "cv_roc_auc_mean", "cv_roc_auc_std"} <= set(run.data.metrics)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/{p}.png" for p in ("roc_curve", "pr_curve", "calibration", "confusion_matrix",
                                       "permutation_importance")} <= plots
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    predictions = model.predict(raw_rows(small_churn_csv))
    assert list(predictions.columns) == ["probability", "label"] and len(predictions) == 30
    assert predictions["probability"].between(0, 1).all()
    assert (predictions["label"] == (predictions["probability"] >= 0.5)).all()
    as_read = pd.read_csv(small_churn_csv).drop(columns=["churn"]).head(30)  # int64 tenure, text charges
    assert as_read["tenure"].dtype == "int64"
    assert len(model.predict(as_read)) == 30
    assert set(model.metadata.get_input_schema().input_names()) == set(as_read.columns) - {"customer_id"}

    with get_client(sync_client=True) as prefect:
        artifacts = {a.key for a in prefect.read_artifacts() if a.flow_run_id == state.state_details.flow_run_id}
    assert {"promotion-decision", "holdout-metrics", "data-profile"} <= artifacts


def test_worse_model_becomes_challenger_and_champion_stays(workspace, fast_config):
    first = train(config=fast_config())
    worse = train(config=fast_config(
        "model.family=random_forest", "model.params.random_forest={n_estimators: 1, max_depth: 1}",
        "promotion.min_value=0.5"))

    assert worse.decision.alias == "challenger" and not worse.decision.promoted
    assert "worse than champion v1" in worse.decision.reason
    assert worse.decision.champion_score == pytest.approx(first.metrics["roc_auc"])
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first.version
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(challenger.version) == worse.version != first.version
    (entry,) = [h for h in aliases.promotion_history(MODEL) if h["version"] == worse.version]
    assert entry["previous_champion"] == first.version and entry["action"] == "challenger"
    assert set(challenger.tags) == {*LINEAGE_TAGS, "mlpipe.model_family", "mlpipe.split", "promotion.alias",
                                    "promotion.reason"}  # the rest is on the run and in the model card


def test_failing_gate_becomes_challenger_even_without_champion(workspace, fast_config):
    summary = train(config=fast_config("promotion.min_value=0.999"))
    assert summary.decision.alias == "challenger"
    assert "fails the gate" in summary.decision.reason
    client = MlflowClient()
    with pytest.raises(Exception):
        client.get_model_version_by_alias(MODEL, "champion")


@pytest.mark.slow  # over 10 s
def test_auto_selection_is_cached_and_a_blend_serves_raw_rows(task_states, flow_logs, workspace, fast_config,
                                                              small_churn_csv):
    auto = ("model.family=auto", "model.candidates=[logistic_regression, random_forest]",
            "model.params.random_forest={n_estimators: 30}")
    first = train(config=fast_config(*auto), return_state=True)
    assert task_states(first.state_details.flow_run_id, "select-model")["select-model"] == "Completed"
    reused = "cross-validation: model selection's fold scores of this model, not refitted"
    logs = flow_logs(first.state_details.flow_run_id, until=lambda logs: reused in logs)
    assert reused in logs and not any("ran on Ray" in message for message in logs), logs  # no Ray here
    second = train(config=fast_config(*auto), return_state=True)
    states = task_states(second.state_details.flow_run_id, "select-model", "fit")
    assert states["select-model"] == "Cached" and states["fit"] == "Cached", states
    assert second.result().reused_version and second.result().version == first.result().version
    with get_client(sync_client=True) as prefect:  # a run from the cache still shows the leaderboard
        boards = [a for a in prefect.read_artifacts() if a.key == "model-leaderboard"]
    assert {first.state_details.flow_run_id, second.state_details.flow_run_id} <= {a.flow_run_id for a in boards}

    # a byte-identical copy under another path: the cache keys on the content, not the path
    copy = workspace / "incoming" / "2026-12-01.csv"
    copy.parent.mkdir()
    copy.write_bytes(small_churn_csv.read_bytes())
    third = train(config=fast_config(*auto, data=copy), return_state=True)
    states = task_states(third.state_details.flow_run_id, "select-model", "fit", "evaluate")
    assert states["select-model"] == states["fit"] == states["evaluate"] == "Cached", states
    assert third.result().reused_version and third.result().dataset_uri == str(copy)
    client = MlflowClient()
    version = client.get_model_version(MODEL, first.result().version)
    assert version.tags["mlpipe.model_family"] in {"logistic_regression", "random_forest", "soft_voting"}
    assert client.get_run(version.run_id).data.tags["mlpipe.model_selection"]
    # evaluation took the picked model's CV from selection (same folds) instead of refitting it
    run = client.get_run(version.run_id)
    assert run.data.tags["mlpipe.cv_source"].startswith("model selection's folds")
    board = client.load_table(run.info.experiment_id, "model_leaderboard.json", run_ids=[run.info.run_id])
    assert run.data.metrics["cv_roc_auc_mean"] == pytest.approx(board.loc[board["picked"], "roc_auc_mean"].iloc[0],
                                                                abs=1e-6)

    # a blend is one Pipeline with a VotingClassifier: saved and loaded through skops' allow-list
    blend = train(config=fast_config("model.family=soft_voting", "model.members=[logistic_regression, random_forest]",
                                     "model.params.random_forest={n_estimators: 30}", "promotion.min_value=0.5"))
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{blend.version}")
    assert type(model.get_raw_model()[-1]).__name__ == "VotingClassifier"
    predictions = model.predict(raw_rows(small_churn_csv))
    assert list(predictions.columns) == ["probability", "label"] and predictions["probability"].between(0, 1).all()
    assert client.get_model_version(MODEL, blend.version).tags["mlpipe.model_family"] == "soft_voting"


def test_identical_rerun_hits_cache_and_adds_no_version(task_states, workspace, fast_config):
    first = train(config=fast_config(), return_state=True)
    second = train(config=fast_config(), return_state=True)

    reused = ("load", "validate", "features", "fit", "evaluate")
    states = task_states(second.state_details.flow_run_id, *reused)
    for name in reused:
        assert states[name] == "Cached", states
    summary = second.result()
    assert summary.reused_version and summary.version == first.result().version
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == 1

    refreshed = train(config=fast_config(), refresh=True, return_state=True)
    states = task_states(refreshed.state_details.flow_run_id, "fit", "load")
    assert states["fit"] == "Completed" and states["load"] == "Completed", states
    assert refreshed.result().reused_version  # same data, config and code: still no new version


def test_changed_data_misses_the_cache(task_states, workspace, fast_config, generate_churn, tmp_path):
    first = train(config=fast_config())
    path = tmp_path / "changed.csv"
    generate_churn(rows=1500, seed=12).to_csv(path, index=False)
    state = train(config=fast_config(data=path), return_state=True)
    assert task_states(state.state_details.flow_run_id, "fit")["fit"] == "Completed"
    assert state.result().version != first.version


def test_bad_dataset_fails_at_validate_with_nothing_registered(task_states, workspace, fast_config, small_churn_csv,
                                                               tmp_path):
    frame = pd.read_csv(small_churn_csv)
    frame["churn"] = "No"
    bad = tmp_path / "single_class.csv"
    frame.to_csv(bad, index=False)

    state = train(config=fast_config(data=bad), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationError) and "single class" in str(error) and "churn" in str(error)
    states = task_states(state.state_details.flow_run_id, "validate")
    assert states["validate"] == "Failed" and "fit" not in states and "register" not in states
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]) == []


def test_flow_parameters_are_the_typed_config_form():
    """The Prefect UI renders `train`'s parameters from this schema: typed, with defaults."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(train).model_dump()
    assert set(schema["properties"]) == {"config", "refresh"}
    definitions = schema["definitions"]
    pipeline = definitions["PipelineConfig"]
    assert pipeline["additionalProperties"] is False
    assert {"data", "split", "features", "model", "evaluation", "promotion", "tracking", "cache", "compute"} <= set(
        pipeline["properties"])
    model = definitions["ModelConfig"]["properties"]
    assert model["family"]["enum"] == ["auto", "logistic_regression", "hist_gradient_boosting", "random_forest",
                                       "xgboost", "lightgbm", "mlp", "soft_voting"]
    assert model["family"]["default"] == "auto"
    assert definitions["PromotionConfig"]["properties"]["min_value"]["default"] == 0.75
    assert definitions["DataConfig"]["properties"]["uri"]["default"] == "data/churn.csv"


# -- a growing table: the gate compares on rows neither model trained on ----------------------

def test_grown_snapshot_is_compared_on_unseen_rows_and_described_by_a_model_card(workspace, fast_config,
                                                                                small_churn_csv, generate_churn):
    from mlpipe.data.splitting import hash_holdout_side, row_keys

    older = pd.read_csv(small_churn_csv)
    grown = workspace / "grown.csv"
    pd.concat([generate_churn(rows=600, seed=12), older], ignore_index=True).to_csv(grown, index=False)
    first = train(config=fast_config())
    second = train(config=fast_config(data=grown))

    d = second.decision
    client = MlflowClient()
    tags = client.get_model_version(MODEL, second.version).tags
    recorded = SplitParams.from_tags(tags)
    assert recorded.method == "hash" and recorded.key == "id:customer_id"
    assert d.champion_version == first.version and d.comparison_rows > 100 and d.champion_score is not None
    assert "same hash split" in d.comparison_basis and f"the same {d.comparison_rows} rows" in d.reason
    # the recorded comparison set: the champion trained on none of these customers
    (entry,) = [h for h in aliases.promotion_history(MODEL) if h["version"] == second.version]
    compared = {int(k, 16) for k in aliases.comparison_keys(entry["run_id"])}
    assert len(compared) == d.comparison_rows and float(entry["comparison_rows"]) == d.comparison_rows
    champion_split = SplitParams.from_tags(client.get_model_version(MODEL, first.version).tags)
    older_keys = row_keys(older, ["customer_id"]).to_numpy()
    trained = set(older_keys[~hash_holdout_side(older_keys, champion_split.holdout_fraction, champion_split.seed)])
    assert compared.isdisjoint(trained) and compared & set(older_keys)  # old rows, only unseen ones

    card = client.get_model_version(MODEL, second.version).description
    for text in (f"{MODEL} v{second.version} predicts the probability that churn is Yes", "| rows | 2100 (",
                 "hash split, holdout 0.2, seed 42, keyed on customer_id", "hist_gradient_boosting (",
                 "| holdout | roc_auc ", "| cross-validation | roc_auc ", f"rows neither trained on",
                 str(grown), second.dataset_fingerprint, second.run_id, "| Prefect flow run |"):
        assert text in card, (text, card)
    champion = aliases.alias_version(MODEL, "champion")
    assert f"now **v{champion}**" in client.get_registered_model(MODEL).description


@pytest.mark.slow  # over 10 s
def test_champion_without_split_parameters_follows_the_policy(workspace, fast_config):
    first = train(config=fast_config())
    client = MlflowClient()
    client.delete_model_version_tag(MODEL, first.version, "mlpipe.split")  # as if registered before split tags

    kept = train(config=fast_config("model.params.hist_gradient_boosting.max_iter=81"))
    assert kept.decision.alias == "challenger" and kept.decision.champion_score is None
    assert "records no split parameters" in kept.decision.reason and "keep_champion" in kept.decision.reason
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first.version

    promoted = train(config=fast_config("model.params.hist_gradient_boosting.max_iter=82",
                                        "promotion.when_incomparable=promote_on_gate"))
    assert promoted.decision.promoted and "absolute gate alone" in promoted.decision.reason
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == promoted.version


def test_a_prefix_trains_on_its_newest_snapshot_and_names_the_older_ones(workspace, fast_config, small_churn_csv):
    import os

    folder = workspace / "incoming"
    folder.mkdir()
    frame = pd.read_csv(small_churn_csv)
    for name, rows, mtime in (("part-1.csv", 800, 100), ("part-2.csv", 1500, 200), ("part-3.csv", 1200, 300)):
        frame.head(rows).to_csv(folder / name, index=False)
        os.utime(folder / name, (mtime, mtime))
    summary = train(config=fast_config(data=str(folder) + "/"))
    assert summary.dataset_uri == str(folder / "part-3.csv")
    tags = MlflowClient().get_model_version(MODEL, summary.version).tags
    assert tags["mlpipe.dataset_uri"] == str(folder / "part-3.csv")
    assert tags["mlpipe.dataset_prefix"] == str(folder) + "/"
    assert tags["mlpipe.dataset_superseded"] == "part-2.csv, part-1.csv"


def test_time_split_compares_only_on_rows_newer_than_the_champion(workspace, fast_config, generate_churn):
    months = [generate_churn(rows=700, seed=40 + m, month=m) for m in (1, 2, 3)]
    paths = []
    for upto in (2, 3):
        paths.append(workspace / f"upto-{upto}.csv")
        pd.concat(months[:upto], ignore_index=True).to_csv(paths[-1], index=False)
    first = train(config=fast_config("split.time_column=month", data=paths[0]))
    second = train(config=fast_config("split.time_column=month", "split.holdout_fraction=0.3", data=paths[1]))

    client = MlflowClient()
    assert SplitParams.from_tags(client.get_model_version(MODEL, first.version).tags).max_train_time == "2.0"
    d = second.decision
    assert "month after 2.0, the newest row champion v1 trained on" in d.comparison_basis
    assert d.comparison_rows == 630 and d.champion_score is not None  # 30% of 2100 rows: all from month 3
    card = client.get_model_version(MODEL, second.version).description
    assert "| time range | 1.0 .. 3.0 |" in card and "time split on 'month' (trained up to 3.0)" in card
