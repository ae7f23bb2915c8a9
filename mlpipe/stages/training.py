"""Model selection and fitting: one sklearn Pipeline (features + estimator), seeded."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from mlpipe.compute.evaluation_units import in_process
from mlpipe.core.config import LOWER_IS_BETTER, ModelConfig
from mlpipe.core.families import AUTO, BLEND, default_candidates, get_family, make_blend, make_estimator
from mlpipe.data.splitting import stratified_sample
from mlpipe.model.features import FeatureSpec, model_pipeline


def build_estimator(config: ModelConfig):
    """The unfitted estimator for `config` (a family or a blend, not `auto`), seeded."""
    if config.family == BLEND:
        return make_blend(list(config.members or ()), config.params, config.seed)
    return make_estimator(config.family, config.active_params, config.seed)


def fit_model(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, config: ModelConfig) -> Pipeline:
    """Fit features + estimator as one Pipeline on the train split."""
    pipeline = model_pipeline(spec, clone(preprocessor), build_estimator(config))
    pipeline.fit(train[spec.columns], train[target].to_numpy())
    return pipeline


# -- model selection (model.family: auto) -----------------------------------------------------------

@dataclass(frozen=True)
class CandidateScore:
    """One family's cross-validated score on the train split."""

    family: str
    fold_scores: tuple[float, ...]
    seconds: float
    picked: bool = False
    members: tuple[str, ...] = ()  # a blend's families

    @property
    def label(self) -> str:
        return f"{self.family}({' + '.join(self.members)})" if self.members else self.family

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores, ddof=1)) if len(self.fold_scores) > 1 else 0.0

    @property
    def standard_error(self) -> float:
        return self.std / math.sqrt(len(self.fold_scores))


@dataclass
class ModelSelection:
    """What `auto` chose and why; `model` is the model config with the chosen family."""

    model: ModelConfig
    metric: str
    leaderboard: list[CandidateScore]
    not_tried: list[str] = field(default_factory=list)  # candidates left out when the budget ran out
    reason: str = ""
    rows: int = 0  # train rows the candidates were compared on (a stratified sample of big data)
    folds: int = 0  # how the folds were drawn: their number, the seed of sample and folds, the sample bound
    seed: int = 0
    max_rows: int | None = None

    def picked_cv_scores(self, metric: str, folds: int, seed: int, max_rows: int | None) -> tuple[float, ...] | None:
        """The picked model's fold scores, when a cross-validation with these settings would fit
        that very model on the very same folds of the same rows (evaluation then reuses them
        rather than refitting every fold); None otherwise. A blend's scores come from its
        members' out-of-fold probabilities, which is what the fitted blend averages."""
        if (metric, folds, seed, max_rows) != (self.metric, self.folds, self.seed, self.max_rows):
            return None
        return next((c.fold_scores for c in self.leaderboard if c.picked), None)

    def table(self) -> list[dict[str, object]]:
        """The leaderboard as rows (family, mean, std, seconds, picked), best first; candidates
        the budget left out last, with no score."""
        scored = [{"family": c.label, f"{self.metric}_mean": round(c.mean, 6), f"{self.metric}_std": round(c.std, 6),
                   "folds": len(c.fold_scores), "seconds": round(c.seconds, 2), "picked": c.picked}
                  for c in self.leaderboard]
        return scored + [{"family": f"{family} (not tried: budget spent)", f"{self.metric}_mean": None,
                          f"{self.metric}_std": None, "folds": 0, "seconds": 0.0, "picked": False}
                         for family in self.not_tried]

    def tags(self) -> dict[str, str]:
        tags = {"mlpipe.model_family": self.model.family, "mlpipe.model_selection": self.reason}
        if self.model.members:
            tags["mlpipe.model_members"] = ",".join(self.model.members)
        return tags


def candidate_families(model: ModelConfig) -> list[str]:
    """The families `auto` compares, in order: `model.candidates`, else every registered one."""
    return list(model.candidates) if model.candidates else default_candidates()


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def cross_validate_family(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
                          family: str, metric: str, splits: list[tuple[np.ndarray, np.ndarray]],
                          ) -> tuple[CandidateScore, list[np.ndarray]]:
    """Score features + `family` (with its configured params) on each (fit rows, score rows)
    split of `train`. Returns the score and each fold's positive-class probabilities."""
    from mlpipe.core.metrics import score_metric

    started = time.perf_counter()
    X, y = train[spec.columns], train[target].to_numpy()
    config = model.model_copy(update={"family": family})
    scores, probabilities = [], []
    for fit_rows, score_rows in splits:
        # A fold is one unit of work: the mlp family trains in this process (no Ray Train run per fold)
        pipeline = in_process(model_pipeline(spec, clone(preprocessor), build_estimator(config)))
        pipeline.fit(X.iloc[fit_rows], y[fit_rows])
        probabilities.append(pipeline.predict_proba(X.iloc[score_rows])[:, 1])
        scores.append(score_metric(metric, y[score_rows], probabilities[-1]))
    return CandidateScore(family, tuple(scores), time.perf_counter() - started), probabilities


def pick_family(scores: list[CandidateScore], metric: str) -> tuple[str, str]:
    """The best mean score, or the simplest family within one standard error of it.
    Returns (family, reason)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best = max(scores, key=lambda c: sign * c.mean)
    close = [c for c in scores if sign * (best.mean - c.mean) <= best.standard_error]
    simplest = min(close, key=lambda c: (get_family(c.family).simplicity, -sign * c.mean))
    if simplest.family == best.family:
        return best.family, f"best mean cv {metric} {best.mean:.4f}"
    return simplest.family, (f"simplest within one standard error ({best.standard_error:.4f}) of the best, "
                             f"{best.family} {best.mean:.4f}: {simplest.mean:.4f}")


def _blend_score(members: list[CandidateScore], probabilities: dict[str, list[np.ndarray]],
                 splits: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, metric: str) -> CandidateScore:
    """The soft-voting blend of `members`, scored from their out-of-fold probabilities: the
    blend averages exactly those, so no refit is needed."""
    from mlpipe.core.metrics import score_metric

    names = [c.family for c in members]
    averaged = [np.mean(fold, axis=0) for fold in zip(*(probabilities[n] for n in names))]
    return CandidateScore(BLEND, tuple(score_metric(metric, y[rows], p) for (_, rows), p in zip(splits, averaged)),
                          sum(c.seconds for c in members), members=tuple(names))


def select_model(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
                 metric: str, folds: int, allow_blend: bool = True, clock=time.perf_counter,
                 max_rows: int | None = None) -> ModelSelection:
    """Cross-validate the candidate families on the train split (the holdout is never seen)
    and resolve `model.family: auto` to the pick.

    Candidates run in order on the same folds; once `model.selection_budget_s` has passed, the
    rest are not started (said in `reason`). The pick is the best mean score, or the simplest
    family within one standard error of it. With `model.blend` and `allow_blend`, the soft-voting
    blend of the two best families is scored from their out-of-fold probabilities (no refit:
    the blend averages exactly those) and picked when its mean beats the best single family.
    Above `max_rows` train rows (evaluation.cv_max_rows) the candidates are compared on a
    stratified sample of that many: the ranking needs no more, and refits of every family on a
    big table would cost many times the final fit."""
    if model.family != AUTO:
        raise ValueError(f"select_model resolves model.family auto, not {model.family!r}")
    started = clock()
    train = stratified_sample(train, target, max_rows, model.seed)
    y = train[target].to_numpy()
    splits = _folds(y, folds, model.seed)
    candidates = candidate_families(model)
    scores: list[CandidateScore] = []
    probabilities: dict[str, list[np.ndarray]] = {}
    for family in candidates:
        if scores and clock() - started > model.selection_budget_s:
            break
        score, probabilities[family] = cross_validate_family(train, target, spec, preprocessor, model, family,
                                                             metric, splits)
        scores.append(score)
    not_tried = candidates[len(scores):]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    chosen, reason = pick_family(scores, metric)
    resolved = model.model_copy(update={"family": chosen})
    if model.blend and allow_blend and len(scores) >= 2:
        # Only the top two: blending the third in as well scored no better on the real tables.
        ranked = sorted(scores, key=lambda c: -sign * c.mean)
        mixed = _blend_score(ranked[:2], probabilities, splits, y, metric)
        scores.append(mixed)
        if sign * (mixed.mean - ranked[0].mean) > 0:
            chosen = BLEND
            reason = (f"soft-voting blend of {' + '.join(mixed.members)}: mean cv {metric} {mixed.mean:.4f} beats "
                      f"{ranked[0].family} {ranked[0].mean:.4f}")
            resolved = model.model_copy(update={"family": BLEND, "members": list(mixed.members)})
    if not_tried:
        reason += (f"; model.selection_budget_s ({model.selection_budget_s:g} s) spent, "
                   f"not tried: {', '.join(not_tried)}")
    picked = resolved.members or []
    board = sorted((CandidateScore(c.family, c.fold_scores, c.seconds,
                                   c.family == chosen and list(c.members) == list(picked), c.members) for c in scores),
                   key=lambda c: -sign * c.mean)
    return ModelSelection(resolved, metric, board, not_tried, reason, rows=len(train), folds=folds, seed=model.seed,
                          max_rows=max_rows)

