"""Champion/challenger promotion: the decision is a pure function; the task applies it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from tasks import registry
from tasks.config import LOWER_IS_BETTER, PromotionConfig
from tasks.evaluation import Evaluation
from tasks.metrics import is_better_or_equal, score_metric
from tasks.features import FeatureSpec

CHAMPION, CHALLENGER = "champion", "challenger"


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
    champion_score: float | None = None

    def tags(self) -> dict[str, str]:
        return {f"promotion.{k}": "" if v is None else str(v) for k, v in asdict(self).items() if k != "version"}


def decide_promotion(version: str, candidate_score: float, config: PromotionConfig,
                     champion_version: str | None = None, champion_score: float | None = None,
                     champion_error: str | None = None) -> PromotionDecision:
    """Champion if the candidate meets the absolute gate and is not worse than the current
    champion (re-scored on the same holdout) by more than the tolerance; else challenger."""
    metric = config.metric
    common = dict(version=version, metric=metric, candidate_score=candidate_score,
                  champion_version=champion_version, champion_score=champion_score)
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
    if champion_score is None:
        return PromotionDecision(
            alias=CHALLENGER, promoted=False,
            reason=f"champion v{champion_version} could not be re-scored on this holdout ({champion_error}); "
                   "kept it to be safe", **common)
    if is_better_or_equal(metric, candidate_score, champion_score, config.tolerance):
        return PromotionDecision(
            alias=CHAMPION, promoted=True,
            reason=f"{metric} {candidate_score:.4f} vs champion v{champion_version} {champion_score:.4f} on the same "
                   f"holdout (tolerance {config.tolerance}); passes the gate", **common)
    return PromotionDecision(
        alias=CHALLENGER, promoted=False,
        reason=f"{metric} {candidate_score:.4f} is worse than champion v{champion_version} {champion_score:.4f} "
               f"by more than the tolerance {config.tolerance}", **common)


@task(name="promote", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.5, retry_condition_fn=registry.is_transient_tracking_error)
def promote_task(version: registry.RegisteredVersion, evaluation: Evaluation, holdout, target: str,
                 spec: FeatureSpec, config: PromotionConfig, threshold: float) -> PromotionDecision:
    """Compare with the current champion on the same holdout; set `champion` or `challenger`.

    The read of the current champion, the comparison and the alias change happen under the
    registry's promotion lock: a compare-and-set, so runs finishing together cannot both
    promote against a stale champion. Every decision is appended to the promotion history."""
    from prefect import runtime

    with registry.promotion_lock(version.name, owner=f"v{version.version}"):
        decision = _decide_and_apply(version, evaluation, holdout, target, spec, config, threshold)
        registry.record_promotion(
            version.name, version=version.version, alias=decision.alias, previous=decision.champion_version,
            action="promote" if decision.promoted else decision.alias, reason=decision.reason,
            scores={"candidate_score": decision.candidate_score, "champion_score": decision.champion_score},
            flow_run_id=str(runtime.flow_run.id or ""))
    get_run_logger().info("version %s -> %s: %s", version.version, decision.alias, decision.reason)
    return decision


def _decide_and_apply(version, evaluation, holdout, target, spec, config, threshold) -> PromotionDecision:
    logger = get_run_logger()
    current = registry.alias_version(version.name, CHAMPION)
    champion_score = champion_error = None
    if current is not None and current != version.version:
        try:
            champion_score = registry.champion_score(
                version.name, current, holdout, target, spec.columns,
                lambda y, p: score_metric(config.metric, y, p, threshold))
        except Exception as error:  # incompatible schema, unloadable model: never promote blindly
            champion_error = f"{type(error).__name__}: {error}"
            logger.warning("could not re-score champion v%s: %s", current, champion_error)
    decision = decide_promotion(version.version, evaluation.metrics[config.metric], config, current,
                                champion_score, champion_error)
    registry.tag_version(version.name, version.version, decision.tags())
    if decision.alias == CHALLENGER or decision.promoted:
        registry.set_alias(version.name, decision.alias, version.version)
    return decision
