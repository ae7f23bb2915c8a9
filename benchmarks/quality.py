"""Model quality on real tables: the default pipeline against plain scikit-learn baselines.

    .venv/bin/python benchmarks/quality.py [--datasets breast_cancer,titanic,...] [--seeds 42,1,2] [--candidates]
        [--families xgboost,lightgbm]

For every table of benchmarks/datasets.py, the config names only `data.target` and
`data.positive_label`; everything else is the default (`model.family: auto`). The pipeline's
own load -> validate -> split gives the train and holdout rows; the default pipeline (model
selection by CV on the train rows, then the fit) and three baselines are fitted on the same
train rows and scored on the same holdout rows, which nothing looks at before:
- logreg+onehot: LogisticRegression (sklearn defaults, max_iter raised) on median-imputed,
  scaled numerics and one-hot categories;
- hgb default: HistGradientBoostingClassifier() with default parameters, categories one-hot;
- seed RF: the seed's recipe (shared/bench/seed_recipe.py): mean-imputed scaled numerics,
  one-hot, RandomForest(n_estimators=100, max_depth=10, min_samples_split=5, min_samples_leaf=2).
The default's time is selection + fit in this process (no Prefect, no MLflow). `--seeds`
repeats everything on other holdouts (`split.seed`) and prints the means (a holdout of a few
hundred rows moves roc_auc by a percent). Target (issue 10): on every table the default is
within 0.002 of the best baseline, and above it on average.

`--families` weighs families that are not `auto` candidates (xgboost, lightgbm): each one alone
(the pipeline's features, its default params; holdout roc_auc and fit time), and `auto` with them
added to the candidates (`+families`: roc_auc, selection + fit time) beside today's default. They
join the default candidates when `+families` beats the default on average without losing on a
table, at a time cost worth it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# One thread for every fit (default and baselines alike) unless set: on a small shared machine
# OpenMP threads of HistGradientBoosting spin against other processes (a 0.6 s CV took 55 s here).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from benchmarks.datasets import LOADERS, load  # noqa: E402

MARGIN = 0.002


def _onehot(numeric: list[str], categorical: list[str], numeric_steps) -> ColumnTransformer:
    text = make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                         OneHotEncoder(handle_unknown="ignore"))
    return ColumnTransformer([("num", make_pipeline(*numeric_steps), numeric), ("cat", text, categorical)],
                             sparse_threshold=0.0)


def baselines(numeric: list[str], categorical: list[str]) -> dict[str, Pipeline]:
    """Plain scikit-learn recipes a data scientist would write first."""
    return {
        "logreg+onehot": Pipeline([
            ("pre", _onehot(numeric, categorical, [SimpleImputer(strategy="median"), StandardScaler()])),
            ("model", LogisticRegression(max_iter=5000))]),
        "hgb default": Pipeline([
            ("pre", _onehot(numeric, categorical, ["passthrough"])),
            ("model", HistGradientBoostingClassifier(random_state=42))]),
        "seed RF": Pipeline([
            ("pre", _onehot(numeric, categorical, [SimpleImputer(), StandardScaler()])),
            ("model", RandomForestClassifier(n_estimators=100, max_depth=10, min_samples_split=5,
                                             min_samples_leaf=2, random_state=42))]),
    }


def _as_object(frame):
    """Text columns as object with NaN gaps: what SimpleImputer(constant) accepts."""
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype(object).where(out[column].notna(), np.nan)
    return out


def _timed_fit(train, holdout, spec, preprocessor, target: str, model, folds: int) -> tuple[float, float, str]:
    """(holdout roc_auc, seconds, family) of `model` (`auto`: select, then fit) on these rows."""
    from mlpipe.stages.training import fit_model, select_model

    started = time.perf_counter()
    if model.family == "auto":
        model = select_model(train, target, spec, preprocessor, model, "roc_auc", folds).model
    fitted = fit_model(train, target, spec, preprocessor, model)
    seconds = time.perf_counter() - started
    return roc_auc_score(holdout[target].to_numpy(), fitted.predict_proba(holdout[spec.columns])[:, 1]), seconds, \
        model.family


def weigh_families(train, holdout, spec, preprocessor, target: str, model, families: list[str], folds: int) -> dict:
    """Each of `families` alone, and `auto` with them added to the default candidates."""
    from mlpipe.core.families import default_candidates

    out = {}
    for family in families:
        out[family], out[f"{family} s"], _ = _timed_fit(train, holdout, spec, preprocessor, target,
                                                        model.model_copy(update={"family": family}), folds)
    widened = model.model_copy(update={"candidates": [*default_candidates(), *families]})
    out["+families"], out["+families s"], out["+families family"] = _timed_fit(
        train, holdout, spec, preprocessor, target, widened, folds)
    return out


def run_dataset(name: str, folder: Path, seed: int, show_candidates: bool, families: list[str] = ()) -> dict:
    from mlpipe.core.config import build_config
    from mlpipe.stages.evaluation import evaluate_model  # noqa: F401  (imported here so its import time is not timed)
    from mlpipe.stages.preparation import prepare_rows
    from mlpipe.stages.training import fit_model, select_model

    dataset = load(name, folder)
    config = build_config({"data": {"uri": str(dataset.path), "target": dataset.target,
                                    "positive_label": dataset.positive_label}, "split": {"seed": seed}})
    train, holdout, spec, preprocessor, _ = prepare_rows(config)
    target = dataset.target
    y_train, y_holdout = train[target].to_numpy(), holdout[target].to_numpy()

    started = time.perf_counter()
    selection = select_model(train, target, spec, preprocessor, config.model, config.promotion.metric,
                             config.evaluation.cv_folds)
    model = fit_model(train, target, spec, preprocessor, selection.model)
    seconds = time.perf_counter() - started
    default = roc_auc_score(y_holdout, model.predict_proba(holdout[spec.columns])[:, 1])
    if show_candidates:
        for row in selection.table():
            print(f"    {name} (split seed {seed}): {row}")
        print(f"    {name} (split seed {seed}): picked {selection.model.family}: {selection.reason}")

    scores = {}
    X_train, X_holdout = _as_object(train[spec.columns]), _as_object(holdout[spec.columns])
    for label, pipeline in baselines(list(spec.numeric), list(spec.categorical)).items():
        pipeline.fit(X_train, y_train)
        scores[label] = roc_auc_score(y_holdout, pipeline.predict_proba(X_holdout)[:, 1])
    if families:
        scores.update(weigh_families(train, holdout, spec, preprocessor, target, config.model, families,
                                     config.evaluation.cv_folds))
    return {"name": name, "rows": len(dataset.frame), "columns": dataset.frame.shape[1] - 1,
            "family": selection.model.family, "default": default, "seconds": seconds, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(LOADERS))
    parser.add_argument("--seeds", default="42", help="split seeds; several: the means are printed")
    parser.add_argument("--candidates", action="store_true", help="print each dataset's leaderboard")
    parser.add_argument("--families", default="", help="families to weigh as auto candidates, e.g. xgboost,lightgbm")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]

    names = ("logreg+onehot", "hgb default", "seed RF")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.datasets.split(","):
            runs = [run_dataset(name, Path(folder), seed, args.candidates, families) for seed in seeds]
            weighed = [key for column in ([*families, "+families"] if families else [])
                       for key in (column, f"{column} s")]
            mean = {key: float(np.mean([r[key] for r in runs])) for key in ("default", "seconds", *names, *weighed)}
            picked = sorted({r["family"] for r in runs})
            worst = min(r["default"] - max(r[n] for n in names) for r in runs)
            rows.append({**runs[0], **mean, "worst": worst, "family": picked[0] if len(picked) == 1 else "mixed"})
    print(f"holdout roc_auc, {'split seed ' + args.seeds if len(seeds) == 1 else f'mean of {len(seeds)} splits'}")
    header = (f"{'dataset':<14}{'rows':>6}{'cols':>5}  {'default (family)':<34}{'time':>7}"
              + "".join(f"{n:>15}" for n in names) + f"{'vs best':>9}{'worst split':>12}  ok")
    print(header)
    print("-" * len(header))
    gaps = []
    for row in rows:
        best = max(row[n] for n in names)
        gaps.append(row["default"] - best)
        default = f"{row['default']:.4f} ({row['family']})"
        print(f"{row['name']:<14}{row['rows']:>6}{row['columns']:>5}  {default:<34}{row['seconds']:>6.1f}s"
              + "".join(f"{row[n]:>15.4f}" for n in names)
              + f"{gaps[-1]:>+9.4f}{row['worst']:>+12.4f}  {'yes' if gaps[-1] >= -MARGIN else 'NO'}")
    mean_default = np.mean([r["default"] for r in rows])
    mean_best = np.mean([max(r[n] for n in names) for r in rows])
    print(f"mean roc_auc: default {mean_default:.4f}, best baseline per table {mean_best:.4f} "
          f"({mean_default - mean_best:+.4f}); within {MARGIN} on every table: "
          f"{'yes' if all(g >= -MARGIN for g in gaps) else 'no'}")
    if families:
        print_families(rows, runs_per_table=len(seeds), families=families)


def print_families(rows: list[dict], runs_per_table: int, families: list[str]) -> None:
    """The --families table: each family alone, and auto with them, against today's default."""
    print(f"\nfamilies weighed as auto candidates (roc_auc, seconds; {runs_per_table} split(s) per table)")
    columns = [*families, "+families"]
    header = f"{'dataset':<14}{'default':>16}" + "".join(f"{c:>22}" for c in columns) + f"{'+families vs default':>22}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(f"{row[c]:>13.4f} {row[c + ' s']:>6.1f}s " for c in columns)
        gain = row["+families"] - row["default"]
        print(f"{row['name']:<14}{row['default']:>9.4f} {row['seconds']:>5.1f}s{cells}{gain:>+22.4f}")
    for column in ("default", *columns):
        seconds = "seconds" if column == "default" else f"{column} s"
        print(f"mean {column}: roc_auc {np.mean([r[column] for r in rows]):.4f}, "
              f"{np.mean([r[seconds] for r in rows]):.1f} s")


if __name__ == "__main__":
    main()
