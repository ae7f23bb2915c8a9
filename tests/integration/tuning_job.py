"""A tuning run outside Prefect, for tests that must kill or parallelise it:

    python tests/integration/tuning_job.py CSV TRIALS WORKERS BACKEND [--set key=value ...]

Uses MLPIPE_HOME / MLFLOW_TRACKING_URI from the environment; prints the result as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Small models, so a trial takes a fraction of a second: these tests are about the study, not the fit.
SMALL_SPACE = ("tuning.spaces.hist_gradient_boosting={learning_rate: {type: log_float, low: 0.01, high: 0.3}, "
               "max_iter: {type: int, low: 20, high: 80, step: 20}, max_leaf_nodes: {type: int, low: 7, high: 31}, "
               "min_samples_leaf: {type: int, low: 5, high: 50}}")


def prepare(csv: str, overrides: list[str]):
    from mlpipe.core.config import load_config
    from mlpipe.stages.preparation import prepare_rows

    config = load_config(ROOT / "conf" / "churn.yaml", ["data.min_rows=50", "tuning.cv_folds=2", SMALL_SPACE,
                                                        "model.family=hist_gradient_boosting", *overrides], csv)
    train, _, spec, preprocessor, fingerprint = prepare_rows(config)
    return config, train, spec, preprocessor, fingerprint


def main() -> None:
    from mlpipe.stages.tuning import run_study

    csv, trials, workers, backend, *rest = sys.argv[1:]
    overrides = [a for a in rest if a != "--set"]
    config, train, spec, preprocessor, fingerprint = prepare(
        csv, [f"tuning.trials={trials}", f"tuning.workers={workers}", f"tuning.backend={backend}", *overrides])
    result = run_study(train, "churn", spec, preprocessor, config.model, config.tuning, config.tracking.experiment,
                       fingerprint, progress=lambda done, total, best, eta: print(f"progress {done}/{total}", flush=True))
    print(json.dumps({"study": result.study_name, "best_params": result.best_params, "best_value": result.best_value,
                      "complete": result.complete, "pruned": result.pruned, "failed": result.failed,
                      "parent_run_id": result.parent_run_id, "seconds": result.seconds,
                      "objective_seconds": result.objective_seconds}))


if __name__ == "__main__":
    main()
