"""What Prefect itself costs a run: the local server's start and stop, and each task.

    .venv/bin/python benchmarks/orchestration.py [--tasks 200] [--repeats 3]

The fixed cost of a command with no PREFECT_API_URL (mlpipe/cli/local_server.py):
- the first command starts the server mlpipe keeps between commands: spawn -> healthy, and
  what the command's end costs (drain Prefect's log/event workers, release the lease);
- each next command attaches to that server (take the lease, health check);
- with MLPIPE_SERVER_IDLE_S=0, a server for one command: spawn -> healthy, and its stop;
- what a first command waits for: it spawns the server, then imports and loads its config
  while the server boots (a fresh interpreter), and waits for the rest. That wait and the
  command's end are its fixed cost: the server's start alone overlaps the imports.
Per task: a flow of N trivial tasks against the same N plain calls, in ms per task.

Each repeat runs in a fresh process with its own PREFECT_HOME (never a developer's kept server
or `make server`); its database is created by one unmeasured start first. Prints the median
of `--repeats` runs with min and max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

KEYS = ("kept_start", "kept_end", "attach", "one_start", "one_stop", "per_task", "probe", "imports", "waited")

# What `mlpipe train` does before its flow starts (mlpipe/cli/main.py `_run_flow`): spawn the server,
# import and load the config while it boots, then wait for it. In a fresh interpreter, so the
# imports cost what they cost a command.
FIRST_COMMAND = """
import json, sys, time
started = time.perf_counter()
from mlpipe.cli.local_server import prefect_api
with prefect_api() as server:
    from mlpipe.core.config import load_config
    load_config(sys.argv[1], [], None)
    from mlpipe.flows.training import train
    imported = time.perf_counter()
    server.wait()
    waited = time.perf_counter() - imported
print(json.dumps({"imports": imported - started, "waited": waited}))
"""


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    return f"{statistics.median(values):8.2f} {unit} (min {min(values):.2f}, max {max(values):.2f})"


def timed_command(body=None) -> tuple[float, float, object]:
    """Enter `prefect_api()` as a command does: seconds to a healthy server, seconds its end
    took, and the server."""
    from mlpipe.cli.local_server import prefect_api

    started = time.perf_counter()
    with prefect_api() as server:
        server.wait()
        ready = time.perf_counter() - started
        if body:
            body()
        ending = time.perf_counter()
    return ready, time.perf_counter() - ending, server


def one_repeat(tasks: int) -> dict[str, float]:
    from mlpipe.cli.local_server import IDLE_VARIABLE, LOCAL_API_VARIABLE, answering_prefect_api, free_port

    os.environ[LOCAL_API_VARIABLE] = ""  # measure mlpipe's own server, never a running `make server`
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
    probes = []
    for _ in range(20):  # what every command pays to look for a running local server
        began = time.perf_counter()
        answering_prefect_api(f"http://127.0.0.1:{free_port()}/api")
        probes.append(time.perf_counter() - began)

    os.environ[IDLE_VARIABLE] = "0"
    timed_command()  # creates this home's database (migrations): not a per-command cost
    one_start, one_stop, _ = timed_command()
    import json
    import subprocess

    first = json.loads(subprocess.run([sys.executable, "-c", FIRST_COMMAND, str(ROOT / "conf" / "churn.yaml")],
                                      cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()[-1])

    os.environ[IDLE_VARIABLE] = "600"
    per_task = []

    def flow_of_trivial_tasks() -> None:
        from prefect import flow, task

        @task
        def trivial(i: int) -> int:
            return i + 1

        @flow
        def many(n: int) -> int:
            return sum(trivial(i) for i in range(n))

        many(1)  # the first flow run pays for client set-up: not a per-task cost
        began = time.perf_counter()
        many(tasks)
        flow_s = time.perf_counter() - began
        began = time.perf_counter()
        sum(trivial.fn(i) for i in range(tasks))
        per_task.append((flow_s - (time.perf_counter() - began)) / tasks)

    kept_start, kept_end, kept = timed_command(flow_of_trivial_tasks)
    attach, _, again = timed_command()
    assert again.reused and again.api_url == kept.api_url, "the next command did not reuse the kept server"
    again.stop()
    return {"kept_start": kept_start, "kept_end": kept_end, "attach": attach, "one_start": one_start,
            "one_stop": one_stop, "per_task": per_task[0], "probe": statistics.median(probes), **first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", action="store_true", help="one repeat in this process, printed as JSON")
    args = parser.parse_args()
    import json

    if args.one:
        print(json.dumps(one_repeat(args.tasks)))
        return
    # Each repeat in a fresh process: Prefect keeps its first API URL for the process.
    import subprocess

    runs = [json.loads(subprocess.run([sys.executable, __file__, "--one", "--tasks", str(args.tasks)],
                                      capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(args.repeats)]
    report({key: [run[key] for run in runs] for key in KEYS}, args.tasks)


def report(runs: dict[str, list[float]], tasks: int) -> None:
    median = {key: statistics.median(values) for key, values in runs.items()}
    print(f"first command: kept server start (spawn -> healthy)   {spread(runs['kept_start'])}")
    print(f"first command: its end (drain + release, no stop)      {spread(runs['kept_end'])}")
    print(f"next commands: attach to the kept server               {spread(runs['attach'], 'ms', 1000)}")
    print(f"MLPIPE_SERVER_IDLE_S=0: one-command server start       {spread(runs['one_start'])}")
    print(f"MLPIPE_SERVER_IDLE_S=0: its stop (drain + stop)         {spread(runs['one_stop'])}")
    print(f"first command: its imports + config, server booting   {spread(runs['imports'])}")
    print(f"first command: then waits for the server               {spread(runs['waited'])}")
    print(f"fixed cost per command, what it waits + its end (target <= 1.5 s): "
          f"first {median['waited'] + median['kept_end']:.2f} s, next {median['attach']:.3f} s, "
          f"one-command server {median['waited'] + median['one_stop']:.2f} s "
          f"(server start alone: {median['kept_start']:.2f} s, {median['one_start']:.2f} s)")
    print(f"per task, {tasks} trivial tasks in a flow             {spread(runs['per_task'], 'ms', 1000)}")
    print(f"look for a running `make server` (none there)          {spread(runs['probe'], 'ms', 1000)}")


if __name__ == "__main__":
    main()
