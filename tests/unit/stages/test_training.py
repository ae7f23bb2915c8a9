"""tasks.training: seeded, deterministic fits for every family; parameter checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlpipe.core.config import BucketFeature, FeaturesConfig, ModelConfig, RatioFeature
from mlpipe.core.families import check_model_params, default_candidates, family_names
from mlpipe.model.features import build_preprocessor, feature_spec
from mlpipe.stages.training import build_estimator, fit_model

MODEL_FAMILIES = family_names()

# Small models: determinism does not need many trees, and the suite must stay fast.
SMALL = {
    "logistic_regression": {"C": 0.5},
    "random_forest": {"n_estimators": 15, "min_samples_leaf": 2},
    "hist_gradient_boosting": {"max_iter": 15},
    "mlp": {"num_workers": 0, "epochs": 3, "hidden_layers": [8]},  # in-process torch: no Ray start-up
    "xgboost": {"n_estimators": 15, "n_jobs": 1},
    "lightgbm": {"n_estimators": 15, "n_jobs": 1},
}


def _data(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 60, n).astype(float),
        "charges": rng.normal(50, 15, n),
        "contract": pd.Series(rng.choice(["month", "year", "two"], n), dtype="str"),
    })
    frame.loc[::7, "charges"] = np.nan
    score = -0.05 * frame["tenure"] + 0.03 * frame["charges"].fillna(50) + (frame["contract"] == "month")
    frame["churn"] = (score + rng.normal(0, 0.5, n) > score.median()).astype(int)
    return frame


def _fit_inputs():
    config = FeaturesConfig(
        ratios=[RatioFeature(name="rate", numerator="charges", denominator="tenure")],
        buckets=[BucketFeature(name="tb", column="tenure", edges=[12, 24])],
    )
    spec = feature_spec(["tenure", "charges"], ["contract"], config)
    return spec, build_preprocessor(spec, config)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_fit_model_is_deterministic(family):
    if family == "mlp":
        pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    frame = _data()
    spec, preprocessor = _fit_inputs()
    config = ModelConfig(family=family, params={family: SMALL[family]}, seed=7)
    first = fit_model(frame, "churn", spec, preprocessor, config)
    second = fit_model(frame, "churn", spec, preprocessor, config)
    assert isinstance(first, Pipeline)
    proba = first.predict_proba(frame[spec.columns])
    assert proba.shape == (len(frame), 2)
    np.testing.assert_array_equal(proba, second.predict_proba(frame[spec.columns]))
    assert proba[:, 1].min() < proba[:, 1].max()  # it learned something, not a constant


def test_fit_model_leaves_the_preprocessor_unfitted():
    frame = _data()
    spec, preprocessor = _fit_inputs()
    fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="logistic_regression"))
    assert not hasattr(preprocessor, "transformers_")  # cloned, not fitted in place


def test_seed_changes_a_random_forest():
    frame = _data()
    spec, preprocessor = _fit_inputs()
    params = {"random_forest": {"n_estimators": 5, "max_features": 1}}
    a = fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="random_forest", params=params, seed=1))
    b = fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="random_forest", params=params, seed=2))
    assert not np.array_equal(a.predict_proba(frame[spec.columns]), b.predict_proba(frame[spec.columns]))


@pytest.mark.parametrize(("family", "cls"), [
    ("logistic_regression", LogisticRegression),
    ("random_forest", RandomForestClassifier),
    ("hist_gradient_boosting", HistGradientBoostingClassifier),
])
def test_build_estimator_applies_seed_and_params(family, cls):
    estimator = build_estimator(ModelConfig(family=family, params={family: SMALL[family]}, seed=123))
    assert isinstance(estimator, cls)
    assert estimator.get_params()["random_state"] == 123
    for key, value in SMALL[family].items():
        assert estimator.get_params()[key] == value


def test_build_estimator_defaults_and_explicit_random_state():
    estimator = build_estimator(ModelConfig(family="hist_gradient_boosting", seed=5))
    assert estimator.early_stopping is False  # pipeline default, not sklearn's "auto"
    assert estimator.random_state == 5
    explicit = build_estimator(ModelConfig(family="random_forest", seed=5,
                                           params={"random_forest": {"random_state": 9}}))
    assert explicit.random_state == 9


def test_check_model_params_rejects_unknown_param():
    with pytest.raises(ValueError, match=r"model\.params\.random_forest\.n_trees is not a parameter") as info:
        check_model_params("random_forest", {"n_trees": 3, "n_estimators": 10})
    assert "n_estimators" in str(info.value).split("allowed:")[1]


def test_check_model_params_rejects_invalid_value():
    with pytest.raises(ValueError, match=r"model\.params\.logistic_regression") as info:
        check_model_params("logistic_regression", {"C": -1.0})
    assert "'C'" in str(info.value)


def test_check_model_params_rejects_unknown_family():
    with pytest.raises(ValueError, match="catboost"):
        check_model_params("catboost", {})


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_check_model_params_accepts_valid(family):
    assert check_model_params(family, SMALL[family]) is None


# -- the family table (mlpipe/core/families.py) ----------------------------------------------------------

@pytest.fixture
def scratch_families(monkeypatch):
    """A copy of the family table, so a test can register families without leaking them."""
    from mlpipe.core import families

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    return families


def test_registered_family_is_a_config_choice_and_an_auto_candidate(scratch_families):
    from sklearn.tree import DecisionTreeClassifier

    from mlpipe.stages.training import candidate_families

    scratch_families.register_family("tree", DecisionTreeClassifier, {"max_depth": 3}, simplicity=15)
    assert scratch_families.family_names() == ["logistic_regression", "tree", "hist_gradient_boosting",
                                               "random_forest", "xgboost", "lightgbm", "mlp"]
    assert "tree" in candidate_families(ModelConfig())
    config = ModelConfig(family="tree", params={"tree": {"min_samples_leaf": 2}}, seed=3)
    estimator = build_estimator(config)
    assert isinstance(estimator, DecisionTreeClassifier)
    assert (estimator.max_depth, estimator.min_samples_leaf, estimator.random_state) == (3, 2, 3)
    with pytest.raises(ValueError, match=r"model\.params\.tree\.depth is not a parameter"):
        ModelConfig(family="tree", params={"tree": {"depth": 2}})


def test_family_registered_as_no_candidate_is_left_out_of_auto(scratch_families):
    from mlpipe.stages.training import candidate_families

    scratch_families.register_family("tree", "sklearn.tree.DecisionTreeClassifier", candidate=False)
    assert "tree" in scratch_families.family_names()
    assert "tree" not in candidate_families(ModelConfig())
    assert candidate_families(ModelConfig(candidates=["random_forest", "tree"])) == ["random_forest", "tree"]


def test_register_family_refuses_taken_and_reserved_names(scratch_families):
    with pytest.raises(ValueError, match="already registered"):
        scratch_families.register_family("random_forest", "sklearn.tree.DecisionTreeClassifier")
    for reserved in ("auto", "soft_voting"):
        with pytest.raises(ValueError, match="reserved"):
            scratch_families.register_family(reserved, "sklearn.tree.DecisionTreeClassifier")


def test_model_config_refuses_unknown_candidates_and_a_blend_without_members():
    with pytest.raises(ValueError, match="unknown family 'catboost'"):
        ModelConfig(candidates=["random_forest", "catboost"])
    with pytest.raises(ValueError, match="at least one"):
        ModelConfig(candidates=[])
    with pytest.raises(ValueError, match="two or more"):
        ModelConfig(family="soft_voting", members=["random_forest"])


def test_blend_is_one_soft_voting_estimator_of_its_members():
    from sklearn.ensemble import VotingClassifier

    config = ModelConfig(family="soft_voting", members=["logistic_regression", "random_forest"],
                         params={"random_forest": SMALL["random_forest"]}, seed=4)
    estimator = build_estimator(config)
    assert isinstance(estimator, VotingClassifier) and estimator.voting == "soft"
    assert [name for name, _ in estimator.estimators] == ["logistic_regression", "random_forest"]
    assert estimator.estimators[1][1].n_estimators == 15 and estimator.estimators[1][1].random_state == 4
    frame = _data()
    spec, preprocessor = _fit_inputs()
    pipeline = fit_model(frame, "churn", spec, preprocessor, config)
    members = [m.predict_proba(pipeline[:-1].transform(frame[spec.columns]))[:, 1]
               for m in pipeline[-1].estimators_]
    np.testing.assert_allclose(pipeline.predict_proba(frame[spec.columns])[:, 1], np.mean(members, axis=0))


# -- model selection -------------------------------------------------------------------------------

def _score(family, scores):
    from mlpipe.stages.training import CandidateScore

    return CandidateScore(family, tuple(scores), 1.0)


def test_pick_family_prefers_the_simpler_family_within_one_standard_error():
    from mlpipe.stages.training import pick_family

    # best: random_forest 0.85, standard error 0.02 / sqrt(4) = 0.01; logistic 0.845 is within it
    scores = [_score("random_forest", [0.83, 0.85, 0.87, 0.85]), _score("logistic_regression", [0.845] * 4)]
    family, reason = pick_family(scores, "roc_auc")
    assert family == "logistic_regression" and "within one standard error" in reason
    # 0.835 is beyond one standard error: the best wins
    family, reason = pick_family([scores[0], _score("logistic_regression", [0.835] * 4)], "roc_auc")
    assert family == "random_forest" and reason.startswith("best mean cv roc_auc 0.85")


def test_pick_family_lower_is_better_metric():
    from mlpipe.stages.training import pick_family

    scores = [_score("random_forest", [0.40, 0.41]), _score("logistic_regression", [0.50, 0.52])]
    assert pick_family(scores, "log_loss")[0] == "random_forest"


def _selection_inputs():
    frame = _data(160)
    spec, preprocessor = _fit_inputs()
    model = ModelConfig(params={f: SMALL[f] for f in SMALL})
    return frame, spec, preprocessor, model


def test_select_model_scores_every_candidate_on_the_same_folds_and_resolves_auto():
    from mlpipe.stages.training import select_model

    frame, spec, preprocessor, model = _selection_inputs()
    selection = select_model(frame, "churn", spec, preprocessor, model, "roc_auc", 3)
    board = selection.leaderboard
    assert {c.family for c in board} == {*default_candidates(), "soft_voting"}  # mlp is not a candidate yet
    assert [c.mean for c in board] == sorted((c.mean for c in board), reverse=True)
    assert sum(c.picked for c in board) == 1 and all(len(c.fold_scores) == 3 for c in board)
    picked = next(c for c in board if c.picked)
    assert selection.model.family == picked.family != "auto"
    assert selection.model.params == model.params  # only the family is resolved
    blend = next(c for c in board if c.family == "soft_voting")
    singles = sorted((c for c in board if c.family != "soft_voting"), key=lambda c: -c.mean)
    assert blend.members == (singles[0].family, singles[1].family)
    if picked.family == "soft_voting":
        assert blend.mean > singles[0].mean and selection.model.members == list(blend.members)
    rows = selection.table()
    assert set(rows[0]) == {"family", "roc_auc_mean", "roc_auc_std", "folds", "seconds", "picked"}
    assert selection.tags()["mlpipe.model_family"] == selection.model.family
    again = select_model(frame, "churn", spec, preprocessor, model, "roc_auc", 3)
    assert [c.fold_scores for c in again.leaderboard] == [c.fold_scores for c in board]  # seeded


def test_select_model_without_blend_picks_a_single_family():
    from mlpipe.stages.training import select_model

    frame, spec, preprocessor, model = _selection_inputs()
    for selection in (select_model(frame, "churn", spec, preprocessor, model, "roc_auc", 3, allow_blend=False),
                      select_model(frame, "churn", spec, preprocessor, model.model_copy(update={"blend": False}),
                                   "roc_auc", 3)):
        assert "soft_voting" not in {c.family for c in selection.leaderboard}
        assert selection.model.family in family_names()


def test_select_model_stops_starting_candidates_when_the_budget_is_spent():
    from mlpipe.stages.training import select_model

    frame, spec, preprocessor, model = _selection_inputs()
    ticks = iter(range(0, 1000, 100))  # every clock read is 100 s later
    model = model.model_copy(update={"selection_budget_s": 50.0,
                                     "candidates": ["logistic_regression", "random_forest", "hist_gradient_boosting"]})
    selection = select_model(frame, "churn", spec, preprocessor, model, "roc_auc", 3, clock=lambda: next(ticks))
    assert [c.family for c in selection.leaderboard] == ["logistic_regression"]
    assert selection.not_tried == ["random_forest", "hist_gradient_boosting"]
    assert "selection_budget_s (50 s) spent" in selection.reason and "random_forest" in selection.reason
    assert [(r["family"], r["folds"]) for r in selection.table()] == [
        ("logistic_regression", 3), ("random_forest (not tried: budget spent)", 0),
        ("hist_gradient_boosting (not tried: budget spent)", 0)]


def test_select_model_refuses_a_concrete_family():
    from mlpipe.stages.training import select_model

    frame, spec, preprocessor, _ = _selection_inputs()
    with pytest.raises(ValueError, match="resolves model.family auto"):
        select_model(frame, "churn", spec, preprocessor, ModelConfig(family="random_forest"), "roc_auc", 3)


def test_selection_on_a_big_train_split_compares_families_on_a_bounded_sample():
    """Refitting every candidate on a big table would cost many times the final fit."""
    from mlpipe.stages.training import select_model

    frame = _data(400)
    spec, preprocessor = _fit_inputs()
    config = ModelConfig(family="auto", candidates=["logistic_regression", "hist_gradient_boosting"],
                         params={"hist_gradient_boosting": {"max_iter": 10}}, blend=False)
    bounded = select_model(frame, "churn", spec, preprocessor, config, "roc_auc", 3, max_rows=150)
    whole = select_model(frame, "churn", spec, preprocessor, config, "roc_auc", 3)
    assert (bounded.rows, whole.rows) == (150, 400)
    assert {c.family for c in bounded.leaderboard} == {"logistic_regression", "hist_gradient_boosting"}


def test_a_listed_mlp_candidate_trains_its_folds_in_process_without_ray(monkeypatch):
    """Selection refits each candidate per fold: a Ray Train run per fold would add its start-up
    (about 9 s here) to every fold, so the folds train the mlp with torch in this process."""
    pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    import mlpipe.adapters.ray_cluster
    from mlpipe.stages.training import select_model

    def no_ray(*args, **kwargs):
        raise AssertionError("selection started a Ray Train run")

    monkeypatch.setattr(mlpipe.adapters.ray_cluster, "run_torch_training", no_ray)
    frame, spec, preprocessor, model = _selection_inputs()
    listed = model.model_copy(update={"candidates": ["logistic_regression", "mlp"], "blend": False,
                                      "params": {**model.params, "mlp": {**SMALL["mlp"], "num_workers": 2}}})
    selection = select_model(frame, "churn", spec, preprocessor, listed, "roc_auc", 3)
    mlp = next(c for c in selection.leaderboard if c.family == "mlp")
    assert len(mlp.fold_scores) == 3 and all(0.0 <= s <= 1.0 for s in mlp.fold_scores)
    assert selection.model.params["mlp"]["num_workers"] == 2  # the final fit keeps its Ray Train workers


@pytest.mark.parametrize("blend", [False, True])
def test_evaluation_reuses_the_picked_models_fold_scores_only_when_it_would_compute_the_same(blend):
    """The flow hands selection's fold scores of the picked model to evaluation instead of
    refitting its folds: they must be the numbers evaluation computes itself, for a single
    family and for a blend (scored from out-of-fold probabilities, never refitted as one)."""
    from mlpipe.compute.evaluation_units import fold_scores
    from mlpipe.stages.training import select_model

    frame, spec, preprocessor, model = _selection_inputs()
    model = model.model_copy(update={"candidates": ["logistic_regression", "random_forest"], "blend": blend})
    selection = select_model(frame, "churn", spec, preprocessor, model, "roc_auc", 3)
    assert (selection.model.family == "soft_voting") == blend  # the blend wins on this table
    fitted = fit_model(frame, "churn", spec, preprocessor, selection.model)
    reused = selection.picked_cv_scores("roc_auc", 3, model.seed, None)
    computed = fold_scores(fitted, frame[spec.columns], frame["churn"].to_numpy(), 3, model.seed)
    np.testing.assert_allclose(reused, computed, rtol=0, atol=1e-12)
    # Any other fold setting would not fit the same folds: evaluation computes its own.
    assert selection.picked_cv_scores("roc_auc", 5, model.seed, None) is None
    assert selection.picked_cv_scores("roc_auc", 3, model.seed + 1, None) is None
    assert selection.picked_cv_scores("roc_auc", 3, model.seed, 150) is None
    assert selection.picked_cv_scores("pr_auc", 3, model.seed, None) is None


def test_fit_and_selection_tasks_run_under_compute_threads(monkeypatch):
    """`compute.threads` reaches the thread that fits: OpenMP and BLAS are capped there."""
    from threadpoolctl import threadpool_info

    import mlpipe.tasks.training as training

    seen = []

    def record(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return training.Pipeline([("model", LogisticRegression())])

    monkeypatch.setattr(training, "fit_model", record)
    frame = _data()
    spec, preprocessor = _fit_inputs()
    training.fit_task.fn(train=frame, target="churn", spec=spec, preprocessor=preprocessor,
                         model=ModelConfig(family="logistic_regression"), data_key="k", threads=1)
    monkeypatch.setattr(training, "select_model", record)
    monkeypatch.setattr(training, "get_run_logger", lambda: None)
    with pytest.raises(AttributeError):  # the recorder returns no selection; the cap was already seen
        training.select_model_task.fn(train=frame, target="churn", spec=spec, preprocessor=preprocessor,
                                      model=ModelConfig(), metric="roc_auc", folds=3,
                                      candidates=["logistic_regression"], allow_blend=True, data_key="k", threads=1)
    assert seen == [{1}, {1}]
