"""tasks.reports: the model card a version carries in the registry, the registered model's
description, and the run summary's decision markdown."""

from __future__ import annotations

from mlpipe.core.config import PipelineConfig
from mlpipe.data.splitting import SplitParams
from mlpipe.stages.promotion import ComparisonSet, decide_promotion
from mlpipe.stages.reports import TrainingSummary, decision_markdown, model_card, model_description

METRICS = {"roc_auc": 0.871, "pr_auc": 0.70, "f1": 0.61, "log_loss": 0.38, "cv_roc_auc_mean": 0.89,
           "cv_roc_auc_std": 0.006}


def card(decision, time_range=None, run_url=None, flow_run_url=None) -> str:
    config = PipelineConfig.model_validate({"data": {"uri": "s3://user:pw@bucket/churn.csv"},
                                            "model": {"family": "hist_gradient_boosting",
                                                      "params": {"hist_gradient_boosting": {"max_iter": 90}}}})
    return model_card(name="churn-classifier", version="3", decision=decision, metrics=METRICS, config=config,
                      fingerprint="etag:abc", rows=6000, positive_rate=0.25,
                      split=SplitParams("hash", 0.2, 42, "id:customer_id"), time_range=time_range, run_id="r1",
                      run_url=run_url, flow_run_id="f1", flow_run_url=flow_run_url)


def test_card_says_what_it_predicts_what_it_learned_from_and_why_it_got_its_alias():
    fair = ComparisonSet(rows=1183, positives=300, basis="this run's holdout (same hash split)")
    decision = decide_promotion("3", 0.871, PipelineConfig().promotion, champion_version="2", champion_score=0.86,
                                comparison=fair, candidate_comparison_score=0.87)
    text = card(decision, time_range=("2026-01-01", "2026-06-30"), run_url="http://mlflow/#/r1")
    assert text.startswith("churn-classifier v3 predicts the probability that churn is Yes for one row")
    assert "| | |" not in text  # no empty header row: the decision is the table's header
    assert text.splitlines()[3] == "|---|---|"
    for line in ("| decision | **champion** (promoted): roc_auc 0.8700 vs champion v2 0.8600 on the same 1183 rows",
                 "| comparison set | 1183 rows, 300 positive: this run's holdout (same hash split)",
                 "| data | `s3://***@bucket/churn.csv` |", "| fingerprint | `etag:abc` |",
                 "| rows | 6000 (1500 positive, 25.0%) |", "| time range | 2026-01-01 .. 2026-06-30 |",
                 "| split | hash split, holdout 0.2, seed 42, keyed on customer_id |",
                 "| model | hist_gradient_boosting (max_iter=90), seed 42 |",
                 "| holdout | roc_auc 0.8710, pr_auc 0.7000, f1 0.6100, log_loss 0.3800 |",
                 "| cross-validation | roc_auc 0.8900 ± 0.0060 (5 folds of the train split) |",
                 "| MLflow run | [`r1`](http://mlflow/#/r1) |", "| Prefect flow run | `f1` |"):
        assert line in text, (line, text)
    assert "pw" not in text


def test_card_of_a_first_or_incomparable_version():
    first = card(decide_promotion("1", 0.8, PipelineConfig().promotion), flow_run_url="http://prefect/runs/f1")
    assert "| comparison set | none (no champion to compare with); no champion scored |" in first
    assert "time range" not in first and "[`f1`](http://prefect/runs/f1)" in first
    small = ComparisonSet(rows=12, positives=2, basis="b", problem="only 12 rows")
    kept = card(decide_promotion("3", 0.9, PipelineConfig().promotion, champion_version="2", comparison=small))
    assert "**challenger**: no fair comparison with champion v2: only 12 rows" in kept
    assert "| comparison set | 12 rows, 2 positive: b; champion not scored |" in kept


def test_model_description_names_the_serving_alias():
    text = model_description("churn-classifier", "churn", "Yes", "4", "5")
    assert text.startswith("Binary classifier that predicts the probability that churn is Yes from one raw row")
    assert "`models:/churn-classifier@champion` (now **v4**)" in text and "`@challenger` (v5)" in text
    assert "nothing is `champion`" in model_description("m", "y", None, None, None)


def test_the_flow_run_is_linked_only_on_a_server_that_outlives_the_run():
    from mlpipe.stages.reports import flow_run_link

    temporary = {"PREFECT_API_URL": "http://127.0.0.1:47677/api", "MLPIPE_TEMPORARY_PREFECT_API": "http://127.0.0.1:47677/api"}
    assert flow_run_link("f1", temporary) is None
    assert flow_run_link("f1", {"PREFECT_API_URL": "http://prefect:4200/api"}) == "http://prefect:4200/runs/flow-run/f1"
    assert flow_run_link("f1", {**temporary, "PREFECT_UI_URL": "https://ui.example"}) == "https://ui.example/runs/flow-run/f1"
    assert flow_run_link("", {"PREFECT_API_URL": "http://prefect:4200/api"}) is None


def summary(decision, reused: bool = False) -> TrainingSummary:
    return TrainingSummary(model_name="churn-classifier", version="3", reused_version=reused, run_id="r1",
                           decision=decision, metrics={**METRICS, "train_seconds": 4.2},
                           dataset_uri="s3://u:pw@b/c.csv", dataset_fingerprint="etag:abc",
                           tracking_uri="sqlite:///m.db")


def test_headline_metrics_keep_the_known_metrics_in_order():
    decision = decide_promotion("3", 0.871, PipelineConfig().promotion)
    assert list(summary(decision).headline_metrics()) == ["roc_auc", "pr_auc", "f1", "log_loss", "cv_roc_auc_mean",
                                                          "cv_roc_auc_std"]


def test_decision_markdown_of_a_promotion_against_a_champion():
    fair = ComparisonSet(rows=1183, positives=300, basis="this run's holdout (same hash split)")
    decision = decide_promotion("3", 0.871, PipelineConfig().promotion, champion_version="2", champion_score=0.86,
                                comparison=fair, candidate_comparison_score=0.87)
    text = decision_markdown(summary(decision))
    assert "| | |" not in text
    for line in ("# churn-classifier v3 -> `champion`",
                 "**Decision:** v3 is the new champion: roc_auc 0.8700 vs champion v2 0.8600 on the same 1183 rows",
                 "| candidate roc_auc | 0.8710 |\n|---|---|",
                 "| previous champion | v2 (roc_auc 0.8600; candidate 0.8700 on the same 1183 rows) |",
                 "| comparison set | 1183 rows, 300 positive: this run's holdout (same hash split) |",
                 "| dataset | `s3://***@b/c.csv` |", "| new version | yes |", "| roc_auc | 0.8710 |"):
        assert line in text, (line, text)
    assert "pw" not in text and "train_seconds" not in text


def test_decision_markdown_of_a_first_version_and_of_a_reused_one():
    decision = decide_promotion("1", 0.5, PipelineConfig().promotion)  # below the 0.75 gate
    text = decision_markdown(summary(decision, reused=True))
    assert "# churn-classifier v3 -> `challenger`" in text and "**Decision:** v3 is the challenger" in text
    assert "**Decision:** v3 is the challenger and no version is champion yet: roc_auc 0.5000 fails the gate" in text
    assert "| previous champion | none |" in text
    assert "| comparison set | none (no champion to compare with) |" in text
    assert "| new version | no (identical rerun: existing version reused) |" in text
    rerun = decide_promotion("3", 0.9, PipelineConfig().promotion, champion_version="3")
    assert "**Decision:** v3 stays champion; nothing changed (version 3 is already the champion)." in \
        decision_markdown(summary(rerun))

