"""tasks.evaluation metrics and comparison; tasks.promotion's pure champion/challenger decision."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from mlpipe.core.config import PromotionConfig, SplitConfig
from mlpipe.core.metrics import classification_metrics, is_better_or_equal, score_metric
from mlpipe.data.splitting import Split, SplitParams, key_name, row_keys, split_validated
from mlpipe.data.validation import ValidatedData, ValidationReport
from mlpipe.stages.promotion import (
    CHALLENGER,
    CHAMPION,
    ComparisonSet,
    PromotionDecision,
    comparison_set,
    comparison_summary,
    decide_promotion,
)

# -- classification_metrics ---------------------------------------------------------------------


def test_perfect_ranking():
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert metrics["roc_auc"] == 1.0
    assert metrics["pr_auc"] == 1.0
    for name in ("accuracy", "precision", "recall", "f1"):
        assert metrics[name] == 1.0
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert metrics["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.8)) / 4)


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.6, 0.4, 0.9])  # labels at 0.5: [0, 1, 0, 1] -> TP=1 FP=1 FN=1 TN=1
    metrics = classification_metrics(y, proba)
    assert set(metrics) == {"roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"}
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == 0.5
    assert metrics["recall"] == 0.5
    assert metrics["f1"] == 0.5
    assert metrics["roc_auc"] == 0.75  # 3 of the 4 (positive, negative) pairs ordered right
    assert metrics["pr_auc"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert metrics["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert metrics["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.4)) / 4)
    assert all(isinstance(v, float) for v in metrics.values())


def test_threshold_is_inclusive_and_moves_labels():
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.6, 0.4, 0.9])
    high = classification_metrics(y, proba, threshold=0.7)  # labels [0, 0, 0, 1]
    assert high["precision"] == 1.0 and high["recall"] == 0.5 and high["accuracy"] == 0.75
    at = classification_metrics(y, proba, threshold=0.4)  # 0.4 >= 0.4 -> labels [0, 1, 1, 1]
    assert at["recall"] == 1.0 and at["precision"] == pytest.approx(2 / 3)
    assert high["roc_auc"] == at["roc_auc"]  # ranking metrics do not depend on the threshold


def test_no_predicted_positives_gives_zero_not_an_error():
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert metrics["precision"] == 0.0 and metrics["recall"] == 0.0 and metrics["f1"] == 0.0
    assert metrics["roc_auc"] == 1.0


def test_log_loss_is_finite_for_confident_mistakes():
    metrics = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert math.isfinite(metrics["log_loss"]) and metrics["log_loss"] > 30


def test_score_metric_picks_one():
    y, proba = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])
    assert score_metric("roc_auc", y, proba) == 0.75
    assert score_metric("recall", y, proba, threshold=0.3) == 1.0


# -- is_better_or_equal --------------------------------------------------------------------------

@pytest.mark.parametrize(("candidate", "reference", "tolerance", "expected"), [
    (0.80, 0.80, 0.0, True),
    (0.81, 0.80, 0.0, True),
    (0.79, 0.80, 0.0, False),
    (0.795, 0.80, 0.01, True),
    (0.785, 0.80, 0.01, False),
])
def test_is_better_or_equal_higher_is_better(candidate, reference, tolerance, expected):
    assert is_better_or_equal("roc_auc", candidate, reference, tolerance) is expected


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
@pytest.mark.parametrize(("candidate", "reference", "tolerance", "expected"), [
    (0.30, 0.30, 0.0, True),
    (0.25, 0.30, 0.0, True),
    (0.35, 0.30, 0.0, False),
    (0.305, 0.30, 0.01, True),
    (0.32, 0.30, 0.01, False),
])
def test_is_better_or_equal_lower_is_better(metric, candidate, reference, tolerance, expected):
    assert is_better_or_equal(metric, candidate, reference, tolerance) is expected


# -- decide_promotion ---------------------------------------------------------------------------

AUC = PromotionConfig(metric="roc_auc", min_value=0.75, tolerance=0.01)


def test_no_champion_and_passes_gate_is_promoted():
    decision = decide_promotion("1", 0.80, AUC)
    assert (decision.alias, decision.promoted) == (CHAMPION, True)
    assert "no champion yet" in decision.reason
    assert decision.metric == "roc_auc" and decision.candidate_score == 0.80


def test_gate_boundary_passes():
    assert decide_promotion("1", 0.75, AUC).alias == CHAMPION


def test_fails_gate_is_challenger():
    decision = decide_promotion("1", 0.70, AUC)
    assert (decision.alias, decision.promoted) == (CHALLENGER, False)
    assert "fails the gate" in decision.reason and ">= 0.75" in decision.reason


def test_fails_gate_even_when_better_than_champion():
    decision = decide_promotion("3", 0.70, AUC, champion_version="2", champion_score=0.60)
    assert decision.alias == CHALLENGER and not decision.promoted


def test_better_than_champion_is_promoted():
    decision = decide_promotion("3", 0.85, AUC, champion_version="2", champion_score=0.80)
    assert (decision.alias, decision.promoted) == (CHAMPION, True)
    assert decision.champion_version == "2" and decision.champion_score == 0.80


def test_worse_than_champion_beyond_tolerance_is_challenger():
    decision = decide_promotion("3", 0.78, AUC, champion_version="2", champion_score=0.80)
    assert (decision.alias, decision.promoted) == (CHALLENGER, False)
    assert "worse than champion v2" in decision.reason


def test_within_tolerance_of_champion_is_promoted():
    decision = decide_promotion("3", 0.795, AUC, champion_version="2", champion_score=0.80)
    assert (decision.alias, decision.promoted) == (CHAMPION, True)


def test_zero_tolerance_requires_at_least_equal():
    strict = PromotionConfig(metric="roc_auc", min_value=0.5, tolerance=0.0)
    assert decide_promotion("3", 0.80, strict, champion_version="2", champion_score=0.80).promoted
    assert not decide_promotion("3", 0.7999, strict, champion_version="2", champion_score=0.80).promoted


def test_champion_not_rescored_keeps_champion():
    decision = decide_promotion("3", 0.95, AUC, champion_version="2", champion_score=None,
                                champion_error="MlflowException: schema mismatch")
    assert (decision.alias, decision.promoted) == (CHALLENGER, False)
    assert "could not be re-scored" in decision.reason and "schema mismatch" in decision.reason


def test_same_version_already_champion():
    decision = decide_promotion("2", 0.80, AUC, champion_version="2", champion_score=None)
    assert (decision.alias, decision.promoted) == (CHAMPION, False)
    assert "already the champion" in decision.reason


def test_same_version_already_champion_even_below_gate():
    decision = decide_promotion("2", 0.10, AUC, champion_version="2")
    assert (decision.alias, decision.promoted) == (CHAMPION, False)


LOG_LOSS = PromotionConfig(metric="log_loss", min_value=0.5, tolerance=0.02)


def test_lower_is_better_gate_is_a_maximum():
    passes = decide_promotion("1", 0.40, LOG_LOSS)
    assert (passes.alias, passes.promoted) == (CHAMPION, True)
    assert "<= 0.5" in passes.reason
    assert decide_promotion("1", 0.50, LOG_LOSS).alias == CHAMPION
    fails = decide_promotion("1", 0.60, LOG_LOSS)
    assert (fails.alias, fails.promoted) == (CHALLENGER, False)
    assert "log_loss <= 0.5" in fails.reason


def test_lower_is_better_against_champion():
    assert decide_promotion("3", 0.30, LOG_LOSS, champion_version="2", champion_score=0.35).promoted
    assert decide_promotion("3", 0.36, LOG_LOSS, champion_version="2", champion_score=0.35).promoted  # within 0.02
    worse = decide_promotion("3", 0.40, LOG_LOSS, champion_version="2", champion_score=0.35)
    assert (worse.alias, worse.promoted) == (CHALLENGER, False)


def test_nan_score_is_never_promoted():
    assert decide_promotion("1", float("nan"), AUC).alias == CHALLENGER


def test_a_version_is_tagged_with_its_alias_and_why_only():
    decision = decide_promotion("3", 0.85, AUC, champion_version="2", champion_score=0.8)
    assert decision.version_tags() == {"promotion.alias": "champion", "promotion.reason": decision.reason}
    assert isinstance(decide_promotion("1", 0.8, AUC), PromotionDecision)


# -- the comparison set: rows neither model trained on -----------------------------------------

def _snapshot(n: int, seed: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"customer_id": [f"C{start + i}" for i in range(n)], "x": rng.normal(size=n),
                         "day": np.arange(start, start + n), "y": (rng.random(n) < 0.3).astype(int)})


def _split(frame: pd.DataFrame, split: SplitConfig) -> Split:
    keys = row_keys(frame, ["customer_id"])
    data = ValidatedData(frame=frame, target="y", report=ValidationReport(rows=len(frame)), row_keys=keys,
                         key_name=key_name(["customer_id"]))
    return split_validated(data, split)


@pytest.mark.parametrize("champion_split, candidate_split", [
    (SplitConfig(seed=5), SplitConfig(seed=5)),  # same params: the whole holdout
    (SplitConfig(seed=5), SplitConfig(seed=9, holdout_fraction=0.3)),  # other salt and fraction
    (SplitConfig(seed=5), SplitConfig(time_column="day")),  # the candidate splits by time
    (SplitConfig(time_column="day"), SplitConfig(seed=5)),  # the champion split by time
])
def test_comparison_set_excludes_every_row_either_model_trained_on(champion_split, candidate_split):
    older = _snapshot(4000, 1)
    newer = pd.concat([older, _snapshot(2000, 2, start=4000)], ignore_index=True).sample(frac=1, random_state=3)
    champion, candidate = _split(older, champion_split), _split(newer, candidate_split)
    recorded = SplitParams.from_tags(champion.params.tags())  # what the registry gives back

    summary, rows, keys = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params, recorded,
                                         "1", PromotionConfig(min_comparison_rows=50, min_comparison_positives=5))
    assert summary.comparable and summary.rows == len(rows) == len(keys) > 100
    assert summary.positives == int(rows["y"].sum())
    assert set(rows["customer_id"]).isdisjoint(champion.train["customer_id"])
    assert set(rows["customer_id"]).isdisjoint(candidate.train["customer_id"])
    assert set(keys) == set(row_keys(rows, ["customer_id"]))
    if champion_split == candidate_split:
        assert summary.rows == len(candidate.holdout) and "same hash split" in summary.basis


@pytest.mark.parametrize("champion_split", [SplitConfig(seed=5), SplitConfig(seed=9, holdout_fraction=0.3),
                                            SplitConfig(time_column="day")])
def test_the_comparison_in_blocks_keeps_the_rows_of_the_whole_frame(champion_split):
    """A streamed holdout (compute.stream) is compared on block by block: the blocks' rows
    together are comparison_set's, each scored by both models; a champion that cannot score a
    block leaves its error, not a crash."""
    from functools import partial

    from sklearn.linear_model import LogisticRegression

    from mlpipe.data.blocks import KEY, LABEL
    from mlpipe.stages.promotion import unseen_mask
    from mlpipe.stages.streamed import comparison_block

    older = _snapshot(4000, 1)
    newer = pd.concat([older, _snapshot(2000, 2, start=4000)], ignore_index=True)
    champion, candidate = _split(older, champion_split), _split(newer, SplitConfig(seed=5))
    recorded = SplitParams.from_tags(champion.params.tags())
    config = PromotionConfig(min_comparison_rows=50, min_comparison_positives=5)
    summary, rows, keys = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params, recorded,
                                         "1", config)
    model = LogisticRegression().fit(candidate.train[["x"]], candidate.train["y"])
    holdout = candidate.holdout.assign(**{KEY: candidate.holdout_keys, LABEL: candidate.holdout["y"]})
    unseen = partial(unseen_mask, current=candidate.params, champion=recorded, champion_version="1")

    class Broken:
        def predict_proba(self, frame):
            raise KeyError("tenure")

    blocks = [comparison_block(block, unseen, {"candidate": model, "champion": model}, ["x"])
              for block in (holdout.iloc[:100], holdout.iloc[100:101], holdout.iloc[101:])]
    scored = pd.concat(blocks, ignore_index=True)
    assert list(scored["key"]) == list(keys) and list(scored["label"]) == list(rows["y"])
    np.testing.assert_allclose(scored["candidate"], model.predict_proba(rows[["x"]])[:, 1])
    assert (scored["champion"] == scored["candidate"]).all() and (scored["error"] == "").all()
    assert comparison_summary(scored["label"].to_numpy(), summary.basis, config) == summary
    broken = comparison_block(holdout, unseen, {"candidate": model, "champion": Broken()}, ["x"])
    assert broken["champion"].isna().all() and set(broken["error"]) == {"KeyError: 'tenure'"}


def test_comparison_set_of_a_champion_without_split_tags_is_not_comparable():
    candidate = _split(_snapshot(1000, 1), SplitConfig())
    summary, rows, _ = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params, None, "4",
                                      PromotionConfig())
    assert not summary.comparable and rows.empty
    assert "champion v4 records no split parameters" in summary.problem


def test_comparison_set_too_small_or_keyed_differently():
    candidate = _split(_snapshot(300, 1), SplitConfig())
    strict = PromotionConfig(min_comparison_rows=500)
    summary, _, _ = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params,
                                   candidate.params, "1", strict)
    assert not summary.comparable and "fewer than promotion.min_comparison_rows=500" in summary.problem
    content_keyed = SplitParams(method="hash", holdout_fraction=0.2, seed=42, key="content")
    summary, _, _ = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params,
                                   content_keyed, "1", PromotionConfig())
    assert not summary.comparable and "cannot be matched" in summary.problem
    # a champion recorded before the row-key scheme changed (no key_scheme tag): its keys differ
    older = SplitParams.from_tags({f"mlpipe.split.{k}": "" if v is None else str(v)  # the tags of that time
                                   for k, v in asdict(candidate.params).items() if k != "key_scheme"})
    summary, _, _ = comparison_set(candidate.holdout, candidate.holdout_keys, "y", candidate.params, older, "1",
                                   PromotionConfig())
    assert older.key_scheme == "1" and not summary.comparable
    assert "row-key scheme 1, this run with scheme 2" in summary.problem


def test_incomparable_keeps_the_champion_unless_configured_to_promote_on_the_gate():
    small = ComparisonSet(rows=12, positives=2, basis="b", problem="only 12 rows")
    kept = decide_promotion("3", 0.9, AUC, champion_version="2", comparison=small)
    assert (kept.alias, kept.promoted) == (CHALLENGER, False)
    assert "no fair comparison with champion v2: only 12 rows" in kept.reason and "keep_champion" in kept.reason
    assert kept.comparison_rows == 12
    lenient = AUC.model_copy(update={"when_incomparable": "promote_on_gate"})
    promoted = decide_promotion("3", 0.9, lenient, champion_version="2", comparison=small)
    assert promoted.promoted and "absolute gate alone" in promoted.reason
    assert not decide_promotion("3", 0.7, lenient, champion_version="2", comparison=small).promoted  # gate first


def test_comparison_uses_the_candidate_score_on_the_comparison_set():
    fair = ComparisonSet(rows=500, positives=120, basis="b")
    # better on the whole holdout, worse on the rows the champion never saw: not promoted
    decision = decide_promotion("3", 0.90, AUC, champion_version="2", champion_score=0.85, comparison=fair,
                                candidate_comparison_score=0.80)
    assert not decision.promoted and "0.8000 is worse than champion v2 0.8500 on the same 500 rows" in decision.reason
    decision = decide_promotion("3", 0.80, AUC, champion_version="2", champion_score=0.85, comparison=fair,
                                candidate_comparison_score=0.86)
    assert decision.promoted and decision.candidate_comparison_score == 0.86
