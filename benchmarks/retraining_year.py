"""A simulated year of retraining on a growing table, against one MLflow store.

Twelve monthly cumulative snapshots of the churn sample (month m = the rows of months 1..m).
From `--shift-month` on, customers react more strongly to price (the price sensitivity is
multiplied) and prices rise, so an old model truly gets worse and the drift monitor can see it.
Each month: the drift monitor checks the month's new rows against the champion, then the
`train` flow runs on the snapshot (the retrain deployment's flow). One month (`--weak-month`)
retrains with a deliberately weak model, so a worse retrain is seen to leave the champion alone.

Printed: month, rows, champion before the run, the new version, its score and the champion's
score on the same unseen rows (the comparison set), the set's size, the decision, drift.

    .venv/bin/python benchmarks/retraining_year.py [--rows-per-month 2000] [--months 12] [--set KEY=VALUE ...]

tests/system/test_retraining_year.py runs a short version of the same year and asserts it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MODEL = "churn-classifier"
# Fast evaluation, and a month column that is a record of when a row arrived, not a feature.
BASE_OVERRIDES = ("evaluation.cv_folds=3", "evaluation.permutation_repeats=1", "data.drop_columns=[month]",
                  "promotion.min_comparison_rows=100", "promotion.min_comparison_positives=10")
WEAK_OVERRIDES = ("model.family=random_forest", "model.params.random_forest={n_estimators: 3, max_depth: 2}",
                  "promotion.min_value=0.6")


def _generator():
    spec = importlib.util.spec_from_file_location("generate_churn", ROOT / "data" / "generate_churn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_churn


def month_rows(month: int, rows: int, shift_month: int, sensitivity: float = 3.0,
               price_increase: float = 15.0) -> pd.DataFrame:
    """The customers of one month; from `shift_month` on, price matters `sensitivity` times as
    much and prices are `price_increase` higher."""
    shifted = month >= shift_month
    return _generator()(rows=rows, seed=100 + month, month=month,
                        price_sensitivity=sensitivity if shifted else 1.0,
                        price_increase=price_increase if shifted else 0.0)


def write_snapshots(folder: Path, rows_per_month: int, months: int = 12, shift_month: int = 7
                    ) -> list[tuple[Path, Path]]:
    """(cumulative snapshot, that month's new rows) CSV paths, one pair per month."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs, seen = [], []
    for month in range(1, months + 1):
        new = month_rows(month, rows_per_month, shift_month)
        seen.append(new)
        snapshot, increment = folder / f"churn-{month:02d}.csv", folder / f"new-{month:02d}.csv"
        # Later snapshots list the table in another order: the split must not depend on it.
        pd.concat(seen[::-1], ignore_index=True).to_csv(snapshot, index=False)
        new.to_csv(increment, index=False)
        pairs.append((snapshot, increment))
    return pairs


@dataclass
class Month:
    """One month of the simulated year."""

    month: int
    rows: int
    champion_before: str | None
    version: str
    decision: str  # "promoted", "challenger"
    reason: str
    candidate_score: float  # on the whole holdout (the absolute gate)
    challenger_on_set: float | None  # on the comparison set
    champion_on_set: float | None
    comparison_rows: int | None
    drift: bool | None  # the month's new rows vs the champion (None: no champion yet)
    history_run_id: str
    seconds: float


def run_year(folder: Path, rows_per_month: int, months: int = 12, shift_month: int = 7,
             weak_month: int | None = 4, overrides: tuple[str, ...] = (), log=print) -> list[Month]:
    """Run the year against the MLflow store `MLFLOW_TRACKING_URI` points at (and the Prefect
    API or temporary server this process uses). Returns one `Month` per month."""
    from mlpipe.adapters.mlflow import aliases
    from mlpipe.core.config import load_config
    from mlpipe.flows.monitoring import drift_monitor
    from mlpipe.flows.training import train

    results = []
    for month, (snapshot, increment) in enumerate(write_snapshots(folder, rows_per_month, months, shift_month), 1):
        started = time.perf_counter()
        champion = aliases.alias_version(MODEL, "champion")
        drift = None
        if champion is not None:
            drift = bool(drift_monitor(data_uri=str(increment), model_name=MODEL).drifted)
        extra = WEAK_OVERRIDES if month == weak_month else ()
        config = load_config(ROOT / "conf" / "churn.yaml", [*BASE_OVERRIDES, *overrides, *extra], str(snapshot))
        summary = train(config=config)
        d = summary.decision
        entry = [h for h in aliases.promotion_history(MODEL) if h.get("version") == summary.version][-1]
        results.append(Month(
            month=month, rows=sum(1 for _ in open(snapshot)) - 1, champion_before=champion,
            version=summary.version, decision="promoted" if d.promoted else d.alias, reason=d.reason,
            candidate_score=d.candidate_score, challenger_on_set=d.candidate_comparison_score,
            champion_on_set=d.champion_score, comparison_rows=d.comparison_rows, drift=drift,
            history_run_id=entry["run_id"], seconds=time.perf_counter() - started))
        log(format_row(results[-1]))
    return results


def post_shift_scores(folder: Path, results: list[Month], shift_month: int) -> dict[str, float | int | str]:
    """The last champion trained before the shift and the final champion, scored (roc_auc) on the
    last month's comparison set restricted to post-shift rows: rows neither model trained on."""
    from sklearn.metrics import roc_auc_score

    from mlpipe.adapters.mlflow import aliases, models
    from mlpipe.core.config import load_config
    from mlpipe.data.validation import validate_dataset

    before = results[shift_month - 1].champion_before
    final = [m for m in results if m.decision == "promoted"][-1].version
    snapshot = folder / f"churn-{results[-1].month:02d}.csv"
    config = load_config(ROOT / "conf" / "churn.yaml", list(BASE_OVERRIDES), str(snapshot))
    raw = pd.read_csv(snapshot)
    validated = validate_dataset(raw, config.data)
    unseen = {int(k, 16) for k in aliases.comparison_keys(results[-1].history_run_id)}
    rows = validated.frame[validated.row_keys.isin(unseen).to_numpy() & (raw["month"] >= shift_month).to_numpy()]
    features = [c for c in rows.columns if c != validated.target]
    scores = {v: float(roc_auc_score(rows[validated.target],
                                     models.load_version(MODEL, v).predict_proba(rows[features])[:, 1]))
              for v in (before, final)}
    return {"before_shift": before, "final": final, "rows": len(rows), "before_shift_auc": scores[before],
            "final_auc": scores[final]}


def format_post_shift(scores: dict) -> str:
    return (f"post-shift rows neither model trained on: {scores['rows']}; roc_auc v{scores['before_shift']} "
            f"(last champion before the shift) {scores['before_shift_auc']:.4f}, v{scores['final']} "
            f"(final champion) {scores['final_auc']:.4f}")


HEADER = (f"{'month':>5} {'rows':>6} {'champion':>8} {'new':>4} {'challenger':>10} {'champion':>9} "
          f"{'unseen':>6}  {'decision':<10} {'drift':<5} {'s':>5}")
SUBHEADER = (f"{'':>5} {'':>6} {'before':>8} {'ver':>4} {'on unseen':>10} {'on same':>9} "
             f"{'rows':>6}  {'':<10} {'':<5} {'':>5}")


def format_row(m: Month) -> str:
    score = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    drift = "-" if m.drift is None else ("yes" if m.drift else "no")
    return (f"{m.month:>5} {m.rows:>6} {('v' + m.champion_before) if m.champion_before else '-':>8} "
            f"{'v' + m.version:>4} {score(m.challenger_on_set):>10} {score(m.champion_on_set):>9} "
            f"{m.comparison_rows if m.comparison_rows is not None else '-':>6}  {m.decision:<10} {drift:<5} "
            f"{m.seconds:>5.1f}")


def format_table(results: list[Month]) -> str:
    return "\n".join([HEADER, SUBHEADER, *map(format_row, results)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-month", type=int, default=2000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--shift-month", type=int, default=7)
    parser.add_argument("--weak-month", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every month, e.g. model.params.hist_gradient_boosting.max_iter=60")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["MLPIPE_HOME"] = home
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home}/mlflow.db"
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.chdir(home)
        print(HEADER)
        print(SUBHEADER)
        started = time.perf_counter()
        results = run_year(Path(home) / "snapshots", args.rows_per_month, args.months, args.shift_month,
                           args.weak_month, tuple(args.overrides), log=print)
        print(f"\n{len(results)} months in {time.perf_counter() - started:.0f} s")
        if args.months >= args.shift_month:
            print(format_post_shift(post_shift_scores(Path(home) / "snapshots", results, args.shift_month)))


if __name__ == "__main__":
    main()
