"""The `train` flow's computation with no Prefect: the reference for what orchestration costs.

    .venv/bin/python benchmarks/plain_train.py DATA [--config conf/churn.yaml]
    .venv/bin/python benchmarks/plain_train.py --compare [--rows 200000] [--repeats 3]

`DATA`: runs the body of the `train` flow (flows/training.py) with every task called as its
plain function: no flow or task runs, no API server, no result persistence or cache, no
retries, no task logging to an API. The steps, their arguments, the MLflow logging and the
registration are the same code, so the difference to `mlpipe train` is what Prefect adds.

`--compare`: `mlpipe train` against this script on the same generated sample (`--rows`),
alternating which goes first, each a fresh process with a fresh project home (MLflow store and
cache), the local Prefect server mlpipe keeps between commands already up. Prints the medians,
min and max, and the ratio (target <= 1.15x at 200k rows).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def without_prefect() -> None:
    """Make every Prefect task a plain call, its run logger a plain logger, and its artifacts
    (the leaderboard, the report's tables) nothing: they are Prefect's."""
    import prefect
    import prefect.artifacts
    from prefect.tasks import Task

    Task.__call__ = lambda self, *args, **kwargs: self.fn(*args, **kwargs)
    logger = logging.getLogger("plain_train")
    replacements = {"get_run_logger": lambda *args, **kwargs: logger}
    for kind in ("table", "markdown"):
        replacements[f"create_{kind}_artifact"] = lambda *args, **kwargs: None
    for name, replacement in replacements.items():
        for module in (prefect, prefect.artifacts, *(module for module_name, module in list(sys.modules.items())
                                                      if module_name.startswith(("mlpipe.tasks", "mlpipe.flows")))):
            if hasattr(module, name):
                setattr(module, name, replacement)


def plain_train(data: str, config_path: Path) -> None:
    from mlpipe.core.config import load_config

    config = load_config(config_path, ["cache.enabled=false"], data)  # the cache is Prefect's
    from mlpipe.flows.training import train

    without_prefect()
    started = time.perf_counter()
    summary = train.fn(config=config)
    print(f"holdout roc_auc {summary.headline_metrics()['roc_auc']:.4f}")
    print(f"model {summary.model_name} v{summary.version}: {summary.decision.alias}")
    print(f"time {time.perf_counter() - started:.1f} s")


def compare(rows: int, repeats: int, config: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "data"))
    from generate_churn import generate_churn
    from pipeline_vs_recipe import start_kept_server, timed_command

    start_kept_server()
    commands = {"mlpipe train": [str(Path(sys.executable).with_name("mlpipe")), "train", "--config", str(config)],
                "plain_train": [sys.executable, __file__, "--config", str(config)]}
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / f"churn_{rows}.csv"
        generate_churn(rows).to_csv(data, index=False)
        for repeat in range(repeats):
            order = list(commands) if repeat % 2 == 0 else list(commands)[::-1]
            for name in order:
                with tempfile.TemporaryDirectory() as home:
                    command = [*commands[name], "--data" if name == "mlpipe train" else "", str(data)]
                    took, auc = timed_command([part for part in command if part], Path(home),
                                              r"roc_auc\s*\S?\s*([0-9]\.[0-9]+)", name)
                seconds[name].append(took)
                print(f"{rows:>8,} rows  {name:13s} run {repeat + 1}: {took:6.1f} s  roc_auc {auc:.4f}", flush=True)
    train_s, plain_s = (statistics.median(seconds[name]) for name in commands)
    for name, values in seconds.items():
        print(f"{name:13s} median {statistics.median(values):6.1f} s (min {min(values):.1f}, max {max(values):.1f})")
    print(f"mlpipe train / plain_train at {rows:,} rows = {train_s / plain_s:.2f}x (target <= 1.15x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="dataset URI: run the plain train once")
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "churn.yaml")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.compare:
        compare(args.rows, args.repeats, args.config.resolve())
    elif args.data:
        logging.basicConfig(level=logging.WARNING)
        plain_train(args.data, args.config)
        # End as `mlpipe` does (mlpipe.cli.main.run): the interpreter's teardown of the libraries
        # (1.3 s) is neither Prefect's cost nor the pipeline's.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    else:
        parser.error("give DATA or --compare")


if __name__ == "__main__":
    main()
