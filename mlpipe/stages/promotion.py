"""Champion/challenger promotion: the decision is a pure function; the task applies it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlpipe.adapters.mlflow import aliases, versions
from mlpipe.adapters.mlflow.models import RegisteredVersion, load_version
from mlpipe.core.config import LOWER_IS_BETTER, PromotionConfig
from mlpipe.core.metrics import is_better_or_equal, score_metric
from mlpipe.data.splitting import Split, SplitParams, hash_holdout_side, newer_than
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.evaluation import Evaluation

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class ComparisonSet:
    """The rows a candidate and the champion are compared on: holdout rows of this run that the
    champion did not train on either. `problem` says why no fair comparison is possible."""

    rows: int
    positives: int
    basis: str  # how the rows were chosen, in words
    problem: str | None = None  # too small, or the champion's training rows are unknown

    @property
    def comparable(self) -> bool:
        return self.problem is None


def champion_unseen_rows(holdout: pd.DataFrame, holdout_keys: np.ndarray, current: SplitParams,
                         champion: SplitParams | None, champion_version: str) -> tuple[np.ndarray | None, str]:
    """Which of this run's holdout rows the champion never trained on, from the split parameters
    recorded with it, and how they were chosen. The mask is None when its training rows cannot
    be identified (no recorded split, a random split, or a split keyed on other columns)."""
    if champion is None:
        return None, (f"champion v{champion_version} records no split parameters (registered before hash-stable "
                      "splits): the rows it trained on cannot be identified")
    if champion.method == "hash":
        if champion.key != current.key:
            return None, (f"champion v{champion_version} split rows keyed on {champion.key}, this run on "
                          f"{current.key}: the rows it trained on cannot be matched")
        if champion.key_scheme != current.key_scheme:
            return None, (f"champion v{champion_version} hashed its rows with row-key scheme {champion.key_scheme}, "
                          f"this run with scheme {current.key_scheme}: the rows it trained on cannot be matched")
        unseen = hash_holdout_side(holdout_keys, champion.holdout_fraction, champion.seed)
        same = (champion.method, champion.holdout_fraction, champion.seed) == (current.method,
                                                                               current.holdout_fraction, current.seed)
        how = ("this run's holdout, which is the champion's holdout side too (same hash split: "
               if same else "this run's holdout rows that also fall on the champion's holdout side (")
        return unseen, how + champion.describe() + ")"
    if champion.method == "time":
        if not champion.max_train_time or champion.time_column not in holdout.columns:
            return None, (f"champion v{champion_version} was split on time column {champion.time_column!r}, which "
                          "this data lacks: the rows it trained on cannot be identified")
        unseen = newer_than(holdout[champion.time_column], champion.max_train_time)
        return unseen, (f"this run's holdout rows with {champion.time_column} after {champion.max_train_time}, "
                        f"the newest row champion v{champion_version} trained on")
    return None, (f"champion v{champion_version} used a {champion.method} split: the rows it trained on cannot be "
                  "identified")


def comparison_set(holdout: pd.DataFrame, holdout_keys: np.ndarray, target: str, current: SplitParams,
                   champion: SplitParams | None, champion_version: str,
                   config: PromotionConfig) -> tuple[ComparisonSet, pd.DataFrame, np.ndarray]:
    """The comparison set (summary, rows, their keys): this run's holdout rows (the candidate
    never trained on them) that the champion never trained on either, checked against the
    configured minimum rows and positives (negatives too: a ranking metric needs both)."""
    mask, basis = champion_unseen_rows(holdout, holdout_keys, current, champion, champion_version)
    if mask is None:
        return ComparisonSet(0, 0, basis, problem=basis), holdout.iloc[:0], holdout_keys[:0]
    rows, keys = holdout.loc[mask], np.asarray(holdout_keys)[mask]
    return comparison_summary(rows[target].to_numpy(), basis, config), rows, keys


def comparison_summary(labels: np.ndarray, basis: str, config: PromotionConfig) -> ComparisonSet:
    """The comparison set of rows with these 0/1 `labels`, checked against the configured minimum
    rows and positives (negatives too: a ranking metric needs both)."""
    positives = int(np.sum(labels))
    negatives = len(labels) - positives
    problem = None
    if len(labels) < config.min_comparison_rows or min(positives, negatives) < config.min_comparison_positives:
        problem = (f"only {len(labels)} rows ({positives} positive, {negatives} negative) that neither model "
                   f"trained on, fewer than promotion.min_comparison_rows={config.min_comparison_rows} / "
                   f"min_comparison_positives={config.min_comparison_positives} per class")
    return ComparisonSet(len(labels), positives, basis, problem)


def unseen_mask(rows: pd.DataFrame, keys: np.ndarray, current: SplitParams, champion: SplitParams,
                champion_version: str) -> np.ndarray:
    """`champion_unseen_rows`'s mask alone (a function of each row: it applies block by block)."""
    return champion_unseen_rows(rows, keys, current, champion, champion_version)[0]


class HoldoutBlocks(Protocol):
    """A holdout too large for this process (`compute.stream`), scored where its blocks lie."""

    def score_unseen(self, unseen: Callable[[pd.DataFrame, np.ndarray], np.ndarray], models: dict[str, Any],
                     columns: list[str]) -> pd.DataFrame:
        """For each holdout row that `unseen(rows, keys)` keeps: `key`, `label` (0/1), each
        model's positive-class probability under its name, and `error`: "" or, for the rows of a
        block where a model other than `candidate` failed, what it raised."""


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to a new model version, and why."""

    version: str
    alias: str  # "champion" or "challenger"
    promoted: bool
    reason: str
    metric: str
    candidate_score: float
    champion_version: str | None = None
    champion_score: float | None = None  # on the comparison set
    candidate_comparison_score: float | None = None  # the candidate on the same comparison set
    comparison_rows: int | None = None
    comparison_positives: int | None = None
    comparison_basis: str = ""

    def version_tags(self) -> dict[str, str]:
        """What the version carries: its alias and why. The scores and the comparison are in the
        promotion history (`mlpipe history`) and the model card."""
        return {"promotion.alias": self.alias, "promotion.reason": self.reason}


def decide_promotion(version: str, candidate_score: float, config: PromotionConfig,
                     champion_version: str | None = None, champion_score: float | None = None,
                     champion_error: str | None = None, comparison: ComparisonSet | None = None,
                     candidate_comparison_score: float | None = None) -> PromotionDecision:
    """Champion if the candidate meets the absolute gate (its holdout score) and is not worse
    than the current champion by more than the tolerance, both scored on the comparison set
    (rows neither trained on); else challenger. When there is no usable comparison set, the
    policy `config.when_incomparable` decides, and the reason says so."""
    metric = config.metric
    if candidate_comparison_score is None and comparison is None:
        candidate_comparison_score = candidate_score if champion_score is not None else None
    common = dict(version=version, metric=metric, candidate_score=candidate_score,
                  champion_version=champion_version, champion_score=champion_score,
                  candidate_comparison_score=candidate_comparison_score,
                  comparison_rows=None if comparison is None else comparison.rows,
                  comparison_positives=None if comparison is None else comparison.positives,
                  comparison_basis="" if comparison is None else comparison.basis)
    if champion_version == version:
        return PromotionDecision(alias=CHAMPION, promoted=False, reason=f"version {version} is already the champion",
                                 **common)
    bound = "<=" if metric in LOWER_IS_BETTER else ">="
    gate_ok = (candidate_score <= config.min_value) if metric in LOWER_IS_BETTER else (candidate_score >= config.min_value)
    if not gate_ok:
        return PromotionDecision(
            alias=CHALLENGER, promoted=False,
            reason=f"{metric} {candidate_score:.4f} fails the gate {metric} {bound} {config.min_value}", **common)
    if champion_version is None:
        return PromotionDecision(
            alias=CHAMPION, promoted=True,
            reason=f"{metric} {candidate_score:.4f} passes the gate ({bound} {config.min_value}); no champion yet",
            **common)
    if comparison is not None and not comparison.comparable:
        if config.when_incomparable == "promote_on_gate":
            return PromotionDecision(
                alias=CHAMPION, promoted=True,
                reason=f"no fair comparison with champion v{champion_version}: {comparison.problem}; promoted on the "
                       f"absolute gate alone ({metric} {candidate_score:.4f} {bound} {config.min_value}, "
                       "promotion.when_incomparable=promote_on_gate)", **common)
        return PromotionDecision(
            alias=CHALLENGER, promoted=False,
            reason=f"no fair comparison with champion v{champion_version}: {comparison.problem}; kept the champion "
                   "(promotion.when_incomparable=keep_champion)", **common)
    if champion_score is None:
        return PromotionDecision(
            alias=CHALLENGER, promoted=False,
            reason=f"champion v{champion_version} could not be re-scored on this holdout ({champion_error}); "
                   "kept it to be safe", **common)
    where = "the same holdout" if comparison is None else f"the same {comparison.rows} rows neither trained on"
    if is_better_or_equal(metric, candidate_comparison_score, champion_score, config.tolerance):
        return PromotionDecision(
            alias=CHAMPION, promoted=True,
            reason=f"{metric} {candidate_comparison_score:.4f} vs champion v{champion_version} {champion_score:.4f} on "
                   f"{where} (tolerance {config.tolerance}); passes the gate", **common)
    return PromotionDecision(
        alias=CHALLENGER, promoted=False,
        reason=f"{metric} {candidate_comparison_score:.4f} is worse than champion v{champion_version} "
               f"{champion_score:.4f} on {where} by more than the tolerance {config.tolerance}", **common)


def rescore_champion(name: str, version: str, rows: pd.DataFrame, target: str, columns: list[str], scorer) -> float:
    """Re-score registered version `version` (the champion) on `rows` with `scorer(y, proba)`."""
    model = load_version(name, version)
    proba = model.predict_proba(rows[columns])[:, 1]
    return float(scorer(rows[target].to_numpy(), np.asarray(proba)))




def promote_version(version: RegisteredVersion, evaluation: Evaluation, model, split: Split, target: str,
                    spec: FeatureSpec, config: PromotionConfig, threshold: float, *, flow_run_id: str,
                    logger: logging.Logger | logging.LoggerAdapter,
                    blocks: HoldoutBlocks | None = None) -> PromotionDecision:
    """Compare with the current champion on rows neither trained on; set `champion` or `challenger`.

    The read of the current champion, the comparison and the alias change happen under the
    registry's promotion lock: a compare-and-set, so runs finishing together cannot both
    promote against a stale champion. Every decision is appended to the promotion history,
    with the keys of the rows it compared on (hashes, no data), before the alias moves: a kill
    in between leaves a pending entry that the next promotion settles, never a silent move.
    With `blocks` (a streamed table), the comparison set is every holdout row the champion never
    trained on, scored block by block; `split.holdout` (a bounded sample) only tells whether the
    champion's training rows can be identified."""
    with aliases.promotion_lock(version.name, owner=f"v{version.version}"):
        settled = aliases.settle_pending_entries(version.name)
        if settled:
            logger.warning("settled history entries an interrupted promotion left pending: %s", settled)
        decision, keys = _decide(version, evaluation, model, split, target, spec, config, threshold, logger, blocks)
        moves = decision.alias == CHALLENGER or decision.promoted
        entry = aliases.record_promotion(
            version.name, version=version.version, alias=decision.alias, previous=decision.champion_version,
            action="promote" if decision.promoted else decision.alias, reason=decision.reason,
            scores={"candidate_score": decision.candidate_score, "champion_score": decision.champion_score,
                    "candidate_comparison_score": decision.candidate_comparison_score,
                    "comparison_rows": decision.comparison_rows,
                    "comparison_positives": decision.comparison_positives},
            flow_run_id=flow_run_id,
            details={"comparison_basis": decision.comparison_basis},
            comparison_keys=keys, pending=moves)
        versions.tag_version(version.name, version.version, decision.version_tags())
        if moves:  # the entry first, then the move, then the entry marked done (aliases.py, the history)
            aliases.set_alias(version.name, decision.alias, version.version)
            aliases.complete_promotion(entry)
    logger.info("version %s -> %s: %s", version.version, decision.alias, decision.reason)
    return decision


def _decide(version, evaluation, model, split, target, spec, config, threshold, logger, blocks=None):
    current = aliases.alias_version(version.name, CHAMPION)
    champion_score = champion_error = comparison = candidate_on_set = keys = None
    if current is not None and current != version.version:
        champion_split = SplitParams.from_tags(versions.version_tags(version.name, current))
        scorer = lambda y, p: score_metric(config.metric, y, p, threshold)  # noqa: E731
        if blocks is not None:
            comparison, candidate_on_set, champion_score, champion_error, keys = _compare_in_blocks(
                blocks, version, current, champion_split, model, split, spec, config, scorer)
        else:
            comparison, rows, keys = comparison_set(split.holdout, split.holdout_keys, target, split.params,
                                                    champion_split, current, config)
            if comparison.comparable:
                candidate_on_set = float(scorer(rows[target].to_numpy(),
                                                np.asarray(model.predict_proba(rows[spec.columns])[:, 1])))
                try:
                    champion_score = rescore_champion(version.name, current, rows, target, spec.columns, scorer)
                except Exception as error:  # incompatible schema, unloadable model: never promote blindly
                    champion_error = f"{type(error).__name__}: {error}"
        logger.info("comparison set: %d rows, %d positives: %s", comparison.rows, comparison.positives,
                    comparison.problem or comparison.basis)
        if champion_error:
            logger.warning("could not re-score champion v%s: %s", current, champion_error)
    decision = decide_promotion(version.version, evaluation.metrics[config.metric], config, current,
                                champion_score, champion_error, comparison, candidate_on_set)
    return decision, keys


def _compare_in_blocks(blocks: HoldoutBlocks, version: RegisteredVersion, current: str, champion_split, model,
                       split: Split, spec: FeatureSpec, config: PromotionConfig, scorer):
    """The comparison over a streamed holdout: (set, candidate's score, champion's score, the
    champion's error, keys). Both models score every holdout row the champion never trained on,
    in one pass over the blocks; only (key, label, two scores) per row come back."""
    mask, basis = champion_unseen_rows(split.holdout, split.holdout_keys, split.params, champion_split, current)
    if mask is None:
        return ComparisonSet(0, 0, basis, problem=basis), None, None, None, np.empty(0, dtype="uint64")
    models, champion_error = {"candidate": model}, None
    try:
        models["champion"] = load_version(version.name, current)
    except Exception as error:  # unloadable: the candidate is still scored, for the record
        champion_error = f"{type(error).__name__}: {error}"
    unseen = partial(unseen_mask, current=split.params, champion=champion_split, champion_version=current)
    scored = blocks.score_unseen(unseen, models, spec.columns)
    labels = scored["label"].to_numpy()
    comparison = comparison_summary(labels, basis, config)
    candidate_score = champion_score = None
    if comparison.comparable:
        candidate_score = float(scorer(labels, scored["candidate"].to_numpy()))
        failures = scored["error"][scored["error"] != ""]
        if len(failures):
            champion_error = champion_error or str(failures.iloc[0])
        elif champion_error is None:
            champion_score = float(scorer(labels, scored["champion"].to_numpy()))
    return comparison, candidate_score, champion_score, champion_error, scored["key"].to_numpy(dtype="uint64")
