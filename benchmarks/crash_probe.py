"""Randomized crashes: `mlpipe train`, `mlpipe tune` and the `score` flow SIGKILLed (the whole
process group) at seeded points, each followed by a run with the same arguments, then the
registry's and the orchestrator's invariants checked.

Half the points are aimed at the steps that write the registry (register, promote, model card):
the kill comes when the console says the step before it finished (the step's start) plus a
random share of the step's duration, as measured by an unkilled run. The other half are drawn
uniformly over a whole run of `train`, `tune` or `score` (in turn). Every train point trains on
a dataset of its own, so each registers a new version and moves an alias.

After each follow-up these must hold (`check_invariants`):
- the follow-up exits 0;
- every alias points at a READY version whose model loads and predicts raw rows (one champion);
- no promotion lock is left;
- no MLflow run is RUNNING, in any experiment (promotion history included), unless marked orphaned;
- every alias has its history entry (none pending that did not happen), and the history's last
  champion entry names the current champion;
- no Prefect flow run is left Running or Pending (the killed process's were marked Crashed);
- a batch-score output is absent or complete (checked right after the kill, and after the follow-up).

    .venv/bin/python benchmarks/crash_probe.py [--points 50] [--seed 28] [--results benchmarks/RESULTS.md]

tests/system/test_crash_random.py runs 8 points of the same harness.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "churn-classifier"
REGISTRY_STEPS = ("register", "promote", "model-card")
# Each command's tasks in the order they run: where a kill landed is the first one not finished.
ORDER = {"train": ("resolve-data", "fingerprint", "load", "validate", "split", "features", "fit", "evaluate",
                   "register", "promote", "model-card", "report"),
         "tune": ("fingerprint", "load", "validate", "split", "features", "tune"),
         "score": ("resolve-model", "load-model", "score", "score-report")}
UNIFORM_CYCLE = ("train", "tune", "score", "train")
TRAIN_SETTINGS = ("model.family=hist_gradient_boosting", "model.params.hist_gradient_boosting.max_iter=60",
                  "evaluation.cv_folds=2", "evaluation.permutation_repeats=1")
SCORE_CODE = """import sys
from mlpipe.flows.batch_inference import score
from mlpipe.tasks.ownership import owned_by_this_process
with owned_by_this_process():
    state = score(data_uri=sys.argv[1], output_uri=sys.argv[2], chunk_rows=2000, return_state=True)
sys.exit(0 if state.is_completed() else 1)
"""


@dataclass(frozen=True)
class Point:
    index: int
    command: str  # train, tune or score
    aim: str | None  # a registry step (killed at its start plus a share of it); None: uniform over the run
    share: float  # of the aimed step's duration, or of the whole run's


def draw_points(count: int, seed: int) -> list[Point]:
    """`count` points: the even ones aimed at the registry steps in turn (from a seeded start),
    the odd ones uniform over train, tune, score, train in turn."""
    rng = random.Random(seed)
    first = rng.randrange(len(REGISTRY_STEPS))
    return [Point(i, "train", REGISTRY_STEPS[(first + i // 2) % len(REGISTRY_STEPS)], rng.random()) if i % 2 == 0
            else Point(i, UNIFORM_CYCLE[(i // 2) % len(UNIFORM_CYCLE)], None, rng.random()) for i in range(count)]


@dataclass
class Outcome:
    point: Point
    delay_s: float = 0.0  # after the aimed step's start, or after the command started
    landed: str = ""  # the step the kill landed in
    follow_up_rc: int | None = None
    follow_up_s: float = 0.0
    failures: list[str] = field(default_factory=list)


class Console:
    """A command run in its own process group, its output lines timed as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.started = time.monotonic()
        self.ended: float | None = None  # when it exited (its output closed)
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))
        self.ended = time.monotonic()  # its output closed: it exited

    def finished_at(self, task: str) -> float | None:
        return next((at for at, line in list(self.lines)
                     if f"Task run '{task}-" in line and "Finished in state" in line), None)

    def kill(self) -> float:
        at = time.monotonic()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join(timeout=5)
        return at

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self.reader.join(timeout=5)
        self.ended = self.ended or time.monotonic()
        return code

    def text(self) -> str:
        return "".join(line for _, line in self.lines)


def landed_in(console: Console, command: str, at: float) -> str:
    """The first step of `command` that had not finished when the kill came at `at`."""
    if not any("Beginning flow run" in line for when, line in console.lines if when <= at):
        return "start-up"
    for task in ORDER[command]:
        finished = console.finished_at(task)
        if finished is None or finished > at:
            return task
    return "end"


class CrashProbe:
    """The harness, in `home` (project home, datasets, outputs). MLflow and Prefect come from
    the environment (MLFLOW_TRACKING_URI, PREFECT_API_URL), which must outlive the kills."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, rows: int = 2000, score_rows: int = 40_000):
        self.home, self.rows = home, rows
        self.env = {**(env or os.environ), "MLPIPE_HOME": str(home), "OMP_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        spec = importlib.util.spec_from_file_location("generate_churn", ROOT / "data" / "generate_churn.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.generate = module.generate_churn
        self.score_input = home / "score-input.csv"
        self.generate(rows=score_rows, seed=5).drop(columns=["churn"]).to_csv(self.score_input, index=False)
        self.raw_rows = self.generate(rows=20, seed=6).drop(columns=["churn"])
        self.duration: dict[str, float] = {}  # an unkilled run of each command, and of each registry step

    def dataset(self, index: int) -> Path:
        path = self.home / f"data-{index}.csv"
        if not path.exists():
            self.generate(rows=self.rows, seed=1000 + index).to_csv(path, index=False)
        return path

    def output(self, index: int) -> Path:
        return self.home / "scores" / f"point-{index}.parquet"

    def args(self, command: str, index: int) -> list[str]:
        mlpipe = str(Path(sys.executable).with_name("mlpipe"))
        common = ["--config", str(ROOT / "conf" / "churn.yaml"), "--data", str(self.dataset(index))]
        settings = [item for setting in TRAIN_SETTINGS for item in ("--set", setting)]
        if command == "train":
            return [mlpipe, "train", *common, *settings]
        if command == "tune":  # a quick family: the kills land in its trials, which take seconds, not minutes
            return [mlpipe, "tune", *common, "--set", "model.family=logistic_regression", "--set",
                    "tuning.cv_folds=2", "--trials", "4", "--workers", "1"]
        return [sys.executable, "-c", SCORE_CODE, str(self.score_input), str(self.output(index))]

    def measure(self) -> None:
        """Unkilled runs: train (registers the first champion), tune, score; their durations and
        the registry steps' (from the finish of the step before to the step's own)."""
        for command in ("train", "tune", "score"):
            console = Console(self.args(command, -1), self.env, self.home)
            code = console.wait(timeout=900)
            if code != 0:
                raise RuntimeError(f"the unkilled {command} run failed ({code}):\n{console.text()[-4000:]}")
            self.duration[command] = time.monotonic() - console.started
            if command == "train":
                order = ORDER["train"]
                for step in REGISTRY_STEPS:
                    before = console.finished_at(order[order.index(step) - 1])
                    self.duration[step] = max(console.finished_at(step) - before, 0.05)

    def kill_delay(self, point: Point, console: Console) -> tuple[float, float] | None:
        """(when to kill, the delay it is after its reference), or None when the run ended first."""
        if point.aim is None:
            delay = point.share * self.duration[point.command]
            return console.started + delay, delay
        before = ORDER["train"][ORDER["train"].index(point.aim) - 1]
        while (started := console.finished_at(before)) is None:
            if console.process.poll() is not None:
                return None
            time.sleep(0.005)
        delay = point.share * self.duration[point.aim]
        return started + delay, delay

    def run_point(self, point: Point) -> Outcome:
        outcome = Outcome(point)
        args = self.args(point.command, point.index)
        console = Console(args, self.env, self.home)
        planned = self.kill_delay(point, console)
        if planned is not None:
            while time.monotonic() < planned[0] and console.process.poll() is None:
                time.sleep(0.002)
        if console.process.poll() is None:
            killed_at = console.kill()
            outcome.delay_s, outcome.landed = planned[1], landed_in(console, point.command, killed_at)
        else:
            outcome.landed = "after the end (not killed)"
        if point.command == "score":
            outcome.failures += score_output_problems(self.output(point.index), self.score_input, may_be_absent=True)
        follow_up = Console(args, self.env, self.home)
        outcome.follow_up_rc = follow_up.wait(timeout=900)
        outcome.follow_up_s = time.monotonic() - follow_up.started
        if outcome.follow_up_rc != 0:
            outcome.failures.append(f"follow-up exited {outcome.follow_up_rc}: {follow_up.text()[-1500:]}")
        if point.command == "score":
            outcome.failures += score_output_problems(self.output(point.index), self.score_input, may_be_absent=False)
        outcome.failures += check_invariants(MODEL, self.raw_rows)
        return outcome


def score_output_problems(output: Path, source: Path, may_be_absent: bool) -> list[str]:
    """A batch-score output is absent (when allowed) or complete: every input row, readable."""
    import pandas as pd

    leftovers = [] if may_be_absent else [f"a partial file {p.name} was left" for p in
                                          output.parent.glob(output.name + ".tmp-*")]
    if not output.exists():
        return leftovers if may_be_absent else [*leftovers, f"no score output at {output}"]
    try:
        scored = len(pd.read_parquet(output))
    except Exception as error:  # noqa: BLE001 - a partial file is the finding
        return [f"score output {output.name} unreadable: {type(error).__name__}: {error}"]
    expected = sum(1 for _ in open(source)) - 1
    return leftovers + ([] if scored == expected else [f"score output {output.name} has {scored} of {expected} rows"])


def check_invariants(name: str, raw_rows) -> list[str]:
    """What must hold after any follow-up run (the module docstring's list); [] when all do."""
    return [*_registry_problems(name, raw_rows), *_run_problems(), *_history_problems(name), *_flow_run_problems()]


def _registry_problems(name: str, raw_rows) -> list[str]:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    client, problems = MlflowClient(), []
    if client.search_registered_models(f"name = '{name}.promotion-lock'"):
        problems.append("a promotion lock was left")
    for alias, version in client.get_registered_model(name).aliases.items():
        if client.get_model_version(name, version).status != "READY":
            problems.append(f"{alias} points at v{version}, which is not READY")
            continue
        predicted = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}@{alias}").predict(raw_rows))
        if len(predicted) != len(raw_rows):
            problems.append(f"{alias} v{version} predicted {len(predicted)} of {len(raw_rows)} raw rows")
    return problems


def _run_problems() -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(max_results=50000)]
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000)
    return [f"MLflow run {r.info.run_id} ({r.info.run_name}, experiment {r.info.experiment_id}) left RUNNING"
            for r in running if "mlpipe.orphaned" not in r.data.tags]


def _history_problems(name: str) -> list[str]:
    from mlflow import MlflowClient

    from mlpipe.adapters.mlflow.aliases import promotion_history

    aliases, problems = MlflowClient().get_registered_model(name).aliases, []
    history = promotion_history(name)
    for alias, version in aliases.items():
        if not any(h.get("alias") == alias and h.get("version") == str(version) for h in history):
            problems.append(f"{alias} v{version} has no history entry")
    for entry in history:
        if entry.get("entry") == "pending" and aliases.get(entry.get("alias", "")) != entry.get("version"):
            problems.append(f"history entry {entry['run_id']} is pending, and its alias move did not happen")
    champions = [h for h in history if h.get("action") in ("promote", "rollback", "champion")]
    if "champion" in aliases and (not champions or champions[-1].get("version") != str(aliases["champion"])):
        problems.append(f"the history's last champion entry is not the champion v{aliases['champion']}")
    return problems


def _flow_run_problems() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    states = FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    with get_client(sync_client=True) as client:
        left = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=states)), limit=200)
    return [f"Prefect flow run {run.name} ({run.id}) left {run.state.name}" for run in left]


def format_table(outcomes: list[Outcome]) -> str:
    """One row per point, then the kills per step landed in, and the failures in total."""
    lines = ["| point | command | aimed at | kill after (s) | landed in | follow-up | failures |",
             "|---:|---|---|---:|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.point.index} | {o.point.command} | {o.point.aim or 'uniform'} | {o.delay_s:.2f} | "
                     f"{o.landed} | rc {o.follow_up_rc}, {o.follow_up_s:.0f} s | "
                     f"{'; '.join(f.splitlines()[0] for f in o.failures) or 0} |")
    landed: dict[str, int] = {}
    for o in outcomes:
        landed[f"{o.point.command}: {o.landed}"] = landed.get(f"{o.point.command}: {o.landed}", 0) + 1
    lines += ["", "| landed in | kills |", "|---|---:|", *(f"| {k} | {v} |" for k, v in sorted(landed.items()))]
    failures = sum(len(o.failures) for o in outcomes)
    lines += ["", f"{len(outcomes)} points, {failures} invariant failures."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--results", type=Path, default=None, help="append the table to this markdown file")
    options = parser.parse_args()
    from mlpipe.cli.local_server import TemporaryPrefectServer

    with tempfile.TemporaryDirectory(prefix="crash-probe-") as folder:
        home = Path(folder)
        # A database of its own: the server Prefect starts uses PREFECT_HOME's, which the kept server of
        # every other mlpipe command on this machine shares; their live runs read as runs left Running.
        os.environ["PREFECT_HOME"] = str(home / "prefect-home")
        server = TemporaryPrefectServer()  # outlives every kill: the harness's child, not the commands'
        try:
            server.wait()
            env = {**os.environ, "PREFECT_API_URL": server.api_url,
                   "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
            os.environ.update(PREFECT_API_URL=env["PREFECT_API_URL"], MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"])
            probe = CrashProbe(home, env)
            probe.measure()
            outcomes = []
            for point in draw_points(options.points, options.seed):
                outcomes.append(probe.run_point(point))
                print(format_table(outcomes[-1:]).splitlines()[2], flush=True)
        finally:
            server.stop()
    table = format_table(outcomes)
    print(table)
    if options.results:
        with open(options.results, "a") as results:
            results.write(f"\n## Randomized crashes ({options.points} points, seed {options.seed})\n\n"
                          f"`python benchmarks/crash_probe.py --points {options.points} --seed {options.seed}`\n\n"
                          f"{table}\n")


if __name__ == "__main__":
    main()
