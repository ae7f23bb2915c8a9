"""The promotion stage's Prefect tasks: thin wrappers over `mlpipe.stages.promotion`."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.mlflow.models import RegisteredVersion
from mlpipe.core.config import PromotionConfig
from mlpipe.core.retry_policies import TRACKING_RETRIES
from mlpipe.data.splitting import Split
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.evaluation import Evaluation
from mlpipe.stages.promotion import HoldoutBlocks, PromotionDecision, promote_version


@task(name="promote", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def promote_task(*, version: RegisteredVersion, evaluation: Evaluation, model, split: Split, target: str,
                 spec: FeatureSpec, promotion: PromotionConfig, threshold: float,
                 blocks: HoldoutBlocks | None = None) -> PromotionDecision:
    """Compare with the current champion on rows neither trained on, under the registry's
    promotion lock; set `champion` or `challenger` and record the decision in the history.
    `blocks`: a streamed table's holdout, compared on block by block (on Ray)."""
    from prefect import runtime

    return promote_version(version, evaluation, model, split, target, spec, promotion, threshold,
                           flow_run_id=str(runtime.flow_run.id or ""), logger=get_run_logger(), blocks=blocks)
