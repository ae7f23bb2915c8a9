"""mlpipe.data.drift: PSI and the other drift numbers, feature thresholds and the verdict, on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlpipe.data.drift import (
    DriftThresholds,
    FeatureDrift,
    categorical_psi,
    drift_verdict,
    feature_drift,
    feature_reasons,
    missing_rate_change,
    numeric_psi,
    prediction_psi,
    psi_from_counts,
    quantile_edges,
    unseen_share,
)


def normal(n: int, loc: float = 0.0, seed: int = 0) -> pd.Series:
    return pd.Series(np.random.default_rng(seed).normal(loc, 1.0, n))


def categories(n: int, p: list[float], seed: int = 0, values=("a", "b", "c")) -> pd.Series:
    return pd.Series(np.random.default_rng(seed).choice(list(values), n, p=p), dtype=object)


# -- PSI -----------------------------------------------------------------------------------------

def test_psi_from_counts_identical_is_zero_and_known_value():
    assert psi_from_counts(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0)
    # 50/50 -> 80/20: (0.3 ln 1.6) + (-0.3 ln 0.4)
    assert psi_from_counts(np.array([5, 5]), np.array([8, 2])) == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4))


def test_psi_from_counts_empty_bin_stays_finite():
    value = psi_from_counts(np.array([10, 0]), np.array([5, 5]))
    assert np.isfinite(value) and value > 1


def test_numeric_psi_near_zero_for_same_distribution():
    assert numeric_psi(normal(5000, seed=1), normal(5000, seed=2)) < 0.02


def test_numeric_psi_large_for_shifted_distribution():
    small, large = numeric_psi(normal(5000, seed=1), normal(5000, 0.2, seed=2)), \
        numeric_psi(normal(5000, seed=1), normal(5000, 1.5, seed=2))
    assert 0.02 < small < 0.2 < large
    assert large > 1.0


def test_numeric_psi_ignores_missing_values():
    ref = normal(2000, seed=1)
    cur = pd.concat([normal(2000, seed=2), pd.Series([np.nan] * 500)], ignore_index=True)
    assert numeric_psi(ref, cur) < 0.02


def test_quantile_edges_collapse_ties():
    ties = pd.Series([0] * 80 + [1] * 10 + [2] * 10)
    assert quantile_edges(ties).tolist() == [0.0, 1.0]
    assert len(quantile_edges(normal(1000))) == 9


def test_constant_column_does_not_crash():
    constant = pd.Series([3.0] * 100)
    assert quantile_edges(constant).tolist() == [3.0]
    assert numeric_psi(constant, constant) == pytest.approx(0.0)
    assert numeric_psi(constant, pd.Series([3.0] * 50 + [7.0] * 50)) > 1  # half the rows left the value
    assert numeric_psi(constant, pd.Series([np.nan] * 10)) == 0.0  # nothing to compare: missing rate says it


def test_integer_feature_with_few_values():
    ref = pd.Series(np.random.default_rng(1).poisson(1.2, 3000))
    assert numeric_psi(ref, pd.Series(np.random.default_rng(2).poisson(1.2, 3000))) < 0.02
    assert numeric_psi(ref, pd.Series(np.random.default_rng(2).poisson(3.0, 3000))) > 0.5


def test_categorical_psi_same_and_shifted():
    ref = categories(4000, [0.5, 0.3, 0.2], seed=1)
    assert categorical_psi(ref, categories(4000, [0.5, 0.3, 0.2], seed=2)) < 0.01
    assert categorical_psi(ref, categories(4000, [0.1, 0.1, 0.8], seed=2)) > 0.5


def test_categorical_psi_counts_unseen_and_missing_buckets():
    ref = pd.Series(["a", "b"] * 50, dtype=object)
    assert categorical_psi(ref, pd.Series(["a", "b"] * 50, dtype=object)) == pytest.approx(0.0)
    unseen = pd.Series(["a", "b"] * 40 + ["z"] * 20, dtype=object)
    missing = pd.Series(["a", "b"] * 40 + [None] * 20, dtype=object)
    assert categorical_psi(ref, unseen) > 0.2
    # unseen and missing are separate buckets, each compared with ~0 in the reference
    assert categorical_psi(ref, missing) == pytest.approx(categorical_psi(ref, unseen))


def test_categorical_psi_compares_text_like_the_model():
    """pandas' `str` dtype and object columns with the same values are the same categories."""
    ref = pd.Series(["x", "y", None, "x"], dtype="str")
    assert categorical_psi(ref, pd.Series(["x", "y", None, "x"], dtype=object)) == pytest.approx(0.0)


def test_unseen_share():
    ref = pd.Series(["a", "b", "c", None], dtype=object)
    cur = pd.Series(["a", "z", "z", "b", None, "y", "c", "c", "a", "a"], dtype=object)
    assert unseen_share(ref, cur) == pytest.approx(0.3)  # z, z, y of 10 rows; missing is not unseen
    assert unseen_share(ref, pd.Series(["a", None], dtype=object)) == 0.0
    assert unseen_share(ref, pd.Series([], dtype=object)) == 0.0


def test_missing_rate_change():
    ref = pd.Series([1.0, np.nan, 3.0, 4.0])          # 25% missing
    cur = pd.Series([np.nan, np.nan, np.nan, 4.0])    # 75% missing
    assert missing_rate_change(ref, cur) == pytest.approx(0.5)
    assert missing_rate_change(cur, ref) == pytest.approx(-0.5)


def test_prediction_psi_fixed_bins():
    rng = np.random.default_rng(3)
    ref = rng.beta(2, 5, 4000)
    assert prediction_psi(ref, rng.beta(2, 5, 4000)) < 0.02
    assert prediction_psi(ref, rng.beta(5, 2, 4000)) > 1
    # all scores in one bin is still a finite, large shift (fixed bins, not quantiles of the reference)
    assert 1 < prediction_psi(ref, np.full(100, 0.95)) < 100
    assert prediction_psi(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)


# -- thresholds and verdict ---------------------------------------------------------------------

def test_thresholds_defaults_and_forbid_unknown_keys():
    t = DriftThresholds()
    assert (t.psi, t.prediction_psi, t.unseen_share, t.missing_rate_change, t.min_drifted_features) == (
        0.2, 0.2, 0.05, 0.1, 1)
    with pytest.raises(ValidationError, match="extra"):
        DriftThresholds(psi_max=0.3)
    with pytest.raises(ValidationError):
        DriftThresholds(min_drifted_features=0)


def fd(name: str, psi: float = 0.0, unseen: float = 0.0, missing: tuple[float, float] = (0.0, 0.0),
       thresholds: DriftThresholds = DriftThresholds()) -> FeatureDrift:
    return FeatureDrift(name, "numeric", psi, unseen, *missing,
                        reasons=feature_reasons(psi, unseen, missing[1] - missing[0], thresholds))


@pytest.mark.parametrize(("psi", "unseen", "missing", "drifted"), [
    (0.05, 0.0, (0.0, 0.0), False),
    (0.2, 0.05, (0.0, 0.1), False),   # at the thresholds: not above them
    (0.25, 0.0, (0.0, 0.0), True),
    (0.0, 0.06, (0.0, 0.0), True),
    (0.0, 0.0, (0.0, 0.15), True),
    (0.0, 0.0, (0.3, 0.05), True),    # a column that fills in also moved
])
def test_feature_thresholds(psi, unseen, missing, drifted):
    assert fd("x", psi, unseen, missing).drifted is drifted


def test_verdict_needs_min_drifted_features():
    features = [fd("a", psi=0.5), fd("b", psi=0.01), fd("c", unseen=0.2)]
    drifted, reasons = drift_verdict(features, 0.0, DriftThresholds())
    assert drifted and "2 drifted features" in reasons[0] and "a: psi 0.500" in reasons[0]
    assert drift_verdict(features, 0.0, DriftThresholds(min_drifted_features=3)) == (False, [])
    assert drift_verdict([fd("b", psi=0.01)], 0.0, DriftThresholds()) == (False, [])


def test_verdict_prediction_shift_alone_is_drift():
    drifted, reasons = drift_verdict([fd("b", psi=0.01)], 0.35, DriftThresholds(min_drifted_features=3))
    assert drifted and reasons == ["prediction psi 0.350 > 0.2"]
    assert not drift_verdict([], 0.35, DriftThresholds(prediction_psi=0.5))[0]


def test_feature_drift_categorical_reasons():
    ref = pd.Series(["a", "b"] * 50, dtype=object)
    cur = pd.Series(["a", "b"] * 45 + ["new"] * 10, dtype=object)
    result = feature_drift("plan", "categorical", ref, cur, DriftThresholds(psi=5.0))
    assert result.unseen_share == pytest.approx(0.1) and result.drifted
    assert result.reasons == ("unseen categories 10.0% > 5.0%",)
