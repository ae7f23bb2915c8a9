"""mlpipe.core.metrics: classification metrics by name, on positive-class probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.core.metrics import METRICS, classification_metrics, is_better_or_equal, ranked_roc_auc, score_metric

Y = np.array([0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])


def test_probability_metrics():
    assert score_metric("roc_auc", Y, P) == pytest.approx(8 / 9)
    assert score_metric("brier", Y, P) == pytest.approx(np.mean((P - Y) ** 2))
    assert score_metric("log_loss", Y, np.array([0.0, 0, 1, 1, 1, 0])) < 1e-10  # clipped, not inf


def test_label_metrics_cut_at_the_threshold():
    assert score_metric("accuracy", Y, P) == pytest.approx(4 / 6)  # 0.6 -> 1 and 0.4 -> 0 are wrong
    assert score_metric("accuracy", Y, P, threshold=0.35) == pytest.approx(5 / 6)
    assert score_metric("precision", Y, P) == pytest.approx(2 / 3) and score_metric("recall", Y, P) == pytest.approx(2 / 3)
    assert score_metric("precision", Y, np.zeros(6)) == 0.0  # no positive predicted: 0, not a warning


def test_every_metric_is_reported_and_unknown_names_fail():
    assert set(classification_metrics(Y, P)) == set(METRICS)
    with pytest.raises(ValueError, match="unknown metric 'auc' .allowed: roc_auc"):
        score_metric("auc", Y, P)


def test_better_or_equal_respects_the_metric_direction_and_tolerance():
    assert is_better_or_equal("roc_auc", 0.80, 0.804, tolerance=0.005)
    assert not is_better_or_equal("roc_auc", 0.79, 0.80, tolerance=0.005)
    assert is_better_or_equal("log_loss", 0.30, 0.31) and not is_better_or_equal("log_loss", 0.32, 0.31)


def test_ranked_roc_auc_equals_roc_auc_score_with_ties_and_with_one_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for rows, decimals in ((50, 1), (10_000, 2), (10_000, 8)):  # coarse scores: many ties
        y = rng.integers(0, 2, rows)
        scores = np.round(rng.random(rows) * 0.5 + 0.3 * y, decimals)
        assert ranked_roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    with pytest.warns(Warning, match="Only one class"):  # one class: scikit-learn's own answer
        assert np.isnan(ranked_roc_auc(np.ones(5, dtype=int), np.arange(5.0)))
