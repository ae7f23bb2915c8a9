"""`mlpipe train` against the seed's plain-script recipe, side by side on the same files.

    .venv/bin/python benchmarks/pipeline_vs_recipe.py [--tables sample-7k,telco-7k,sample-200k]
                                                      [--repeats 3] [--recipe PATH] [--results FILE]

Tables (generated, seeded; nothing is downloaded):
- `sample-7k`, `sample-200k`, `sample-1m`: the bundled sample's generator (data/generate_churn.py),
  trained with conf/churn.yaml;
- `telco-7k`: a table shaped like a real telecom churn export (16 text categories, 3 numerics,
  `TotalCharges` as text with blanks, int `tenure`), trained with only the target named.

Each repeat runs the pipeline and the recipe one after the other (alternating which goes
first), each as a fresh process with a fresh MLflow SQLite store, and reads the holdout
roc_auc each prints. `--server kept` (default): the local Prefect server mlpipe keeps between
commands is up before the first timed run, as for every command but a session's first;
`--server one-command` (MLPIPE_SERVER_IDLE_S=0): each run starts and stops its own, as the
first command does (its start overlaps the imports). Prints, per table, the median/min/max wall time of both, the ratio of the
medians (target: <= 1.0) and both roc_aucs; `--results` appends the table to a markdown file.
The recipe is `shared/bench/seed_recipe.py` beside the checkout (`--recipe` to point elsewhere).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "data"))


def telco_export(rows: int = 7000, seed: int = 3) -> pd.DataFrame:
    """A table shaped like the public telecom churn export: mostly text categories, `tenure` as
    int, `TotalCharges` as text with blanks for new customers, Yes/No target (~27%)."""
    rng = np.random.default_rng(seed)
    yes_no = lambda p: rng.choice(["Yes", "No"], rows, p=[p, 1 - p])  # noqa: E731
    internet = rng.choice(["DSL", "Fiber optic", "No"], rows, p=[0.34, 0.44, 0.22])
    service = lambda p: np.where(internet == "No", "No internet service", yes_no(p))  # noqa: E731
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.21, 0.24])
    tenure = rng.integers(0, 73, rows)
    monthly = np.round(np.where(internet == "Fiber optic", 85, np.where(internet == "DSL", 55, 20))
                       + rng.normal(0, 10, rows), 2).clip(18, 119)
    frame = pd.DataFrame({
        "customerID": [f"{i:04d}-{seed}X" for i in rng.permutation(rows)],
        "gender": rng.choice(["Female", "Male"], rows), "SeniorCitizen": (rng.random(rows) < 0.16).astype(int),
        "Partner": yes_no(0.48), "Dependents": yes_no(0.3), "tenure": tenure, "PhoneService": yes_no(0.9),
        "MultipleLines": yes_no(0.42), "InternetService": internet, "OnlineSecurity": service(0.29),
        "OnlineBackup": service(0.34), "DeviceProtection": service(0.34), "TechSupport": service(0.29),
        "StreamingTV": service(0.38), "StreamingMovies": service(0.39), "Contract": contract,
        "PaperlessBilling": yes_no(0.59),
        "PaymentMethod": rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                                     "Credit card (automatic)"], rows),
        "MonthlyCharges": monthly,
        "TotalCharges": [" " if t == 0 else f"{m * t:.2f}" for t, m in zip(tenure, monthly)],
    })
    logit = (-1.2 + 1.3 * (contract == "Month-to-month") - 0.8 * (contract == "Two year") - 0.035 * tenure
             + 0.7 * (internet == "Fiber optic") + 0.5 * (frame["PaymentMethod"] == "Electronic check")
             - 0.4 * (frame["TechSupport"] == "Yes") - 0.3 * (frame["OnlineSecurity"] == "Yes")
             + 0.3 * (frame["PaperlessBilling"] == "Yes") + 0.2 * frame["SeniorCitizen"] + rng.normal(0, 0.3, rows))
    frame["Churn"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return frame


@dataclass
class Table:
    name: str
    rows: int
    kind: str  # "sample" or "telco"

    def write(self, folder: Path) -> Path:
        from generate_churn import generate_churn

        path = folder / f"{self.name}.csv"
        frame = generate_churn(self.rows) if self.kind == "sample" else telco_export(self.rows)
        frame.to_csv(path, index=False)
        return path

    def pipeline_config(self, folder: Path) -> Path:
        if self.kind == "sample":
            return ROOT / "conf" / "churn.yaml"
        path = folder / f"{self.name}.yaml"
        path.write_text("data:\n  target: Churn\n  positive_label: 'Yes'\ntracking:\n  experiment: telco\n"
                        "  model_name: telco-churn\n")
        return path

    def recipe_args(self) -> list[str]:
        return ["churn", "Yes", "customer_id"] if self.kind == "sample" else ["Churn", "Yes", "customerID"]


TABLES = {t.name: t for t in (Table("sample-7k", 7000, "sample"), Table("telco-7k", 7000, "telco"),
                              Table("sample-200k", 200_000, "sample"), Table("sample-1m", 1_000_000, "sample"))}


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    auc: list[float] = field(default_factory=list)


def command_env(home: Path) -> dict[str, str]:
    """The environment a timed command runs in: this one, without a developer's Prefect server
    or tracking URI, with `home` as the project home (its MLflow store and cache)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLPIPE_HOME")}
    return {**env, "MLPIPE_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def start_kept_server() -> None:
    """Bring up the local server mlpipe keeps between commands (a no-op when it is up)."""
    code = "from mlpipe.cli.local_server import prefect_api\nwith prefect_api() as server:\n    server and server.wait()\n"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=command_env(ROOT), check=True)


def timed_command(command: list[str], home: Path, auc_pattern: str, what: str) -> tuple[float, float]:
    """Wall seconds of `command` run in project home `home`, and the holdout roc_auc it printed
    (`auc_pattern`'s first group)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=command_env(home), cwd=home, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return seconds, float(re.search(auc_pattern, done.stdout).group(1))


def run_pipeline(data: Path, config: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        return timed_command([str(BIN / "mlpipe"), "train", "--config", str(config), "--data", str(data)],
                             Path(home), r"roc_auc\s*\S\s*([0-9.]+)", f"mlpipe train on {data.name}")


def run_recipe(recipe: Path, data: Path, args: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        return timed_command([sys.executable, str(recipe), str(data), *args], Path(home),
                             r"holdout roc_auc ([0-9.]+)", f"the seed recipe on {data.name}")


def summary_rows(results: dict[str, tuple[Runs, Runs]]) -> list[str]:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"

    lines = ["| table | mlpipe train median (min-max) | seed recipe median (min-max) | ratio | roc_auc pipeline / recipe |",
             "|---|---|---|---|---|"]
    for name, (pipeline, recipe) in results.items():
        ratio = statistics.median(pipeline.seconds) / statistics.median(recipe.seconds)
        lines.append(f"| {name} | {spread(pipeline.seconds)} | {spread(recipe.seconds)} | {ratio:.2f}x | "
                     f"{statistics.median(pipeline.auc):.4f} / {statistics.median(recipe.auc):.4f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="sample-7k,telco-7k,sample-200k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", type=Path, default=ROOT.parent / "shared" / "bench" / "seed_recipe.py")
    parser.add_argument("--results", type=Path, default=None, help="append the table to this markdown file")
    parser.add_argument("--server", choices=("kept", "one-command"), default="kept",
                        help="the local Prefect server: kept between commands (up before the first run), "
                             "or one per command (MLPIPE_SERVER_IDLE_S=0)")
    args = parser.parse_args()
    if args.server == "one-command":
        os.environ["MLPIPE_SERVER_IDLE_S"] = "0"
    else:
        os.environ.pop("MLPIPE_SERVER_IDLE_S", None)
        start_kept_server()
    print(f"local Prefect server: {args.server}", flush=True)
    if not args.recipe.exists():
        sys.exit(f"the seed recipe is not at {args.recipe}: pass --recipe")
    results: dict[str, tuple[Runs, Runs]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.tables.split(","):
            table = TABLES[name.strip()]
            data, config = table.write(Path(scratch)), table.pipeline_config(Path(scratch))
            pipeline, recipe = Runs(), Runs()
            for repeat in range(args.repeats):
                order = [("pipeline", pipeline), ("recipe", recipe)]
                for which, runs in (order if repeat % 2 == 0 else order[::-1]):
                    seconds, auc = (run_pipeline(data, config) if which == "pipeline"
                                    else run_recipe(args.recipe, data, table.recipe_args()))
                    runs.seconds.append(seconds)
                    runs.auc.append(auc)
                    print(f"{table.name:12s} {which:8s} run {repeat + 1}: {seconds:6.1f} s  roc_auc {auc:.4f}",
                          flush=True)
            results[table.name] = (pipeline, recipe)
    lines = summary_rows(results)
    print("\n".join(lines))
    if args.results:
        header = (f"\n## pipeline vs seed recipe, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
                  f"cores {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                  f"{args.repeats} alternating repeats, local Prefect server: {args.server}\n\n")
        with args.results.open("a") as out:
            out.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
