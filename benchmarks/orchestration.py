"""What Prefect itself costs a run: the temporary server's start and stop, and each task.

    .venv/bin/python benchmarks/orchestration.py [--tasks 200] [--repeats 3]

- fixed cost: the temporary local Prefect server `mlpipe` starts when no PREFECT_API_URL is
  set (deployments/local_server.py), from spawn to healthy, and its stop;
- per task: a flow of N trivial tasks against the same N plain calls, in ms per task.
Prints the median of `--repeats` runs with min and max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    return f"{statistics.median(values):8.2f} {unit} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", action="store_true", help="one repeat in this process, printed as JSON")
    args = parser.parse_args()
    if not args.one:
        # Each repeat in a fresh process: Prefect keeps its first API URL for the process, so a
        # second temporary server in the same process would not be reached.
        import json
        import subprocess

        runs = [json.loads(subprocess.run([sys.executable, __file__, "--one", "--tasks", str(args.tasks)],
                                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                for _ in range(args.repeats)]
        report(*([run[key] for run in runs] for key in ("start", "stop", "per_task", "probe")), args.tasks)
        return
    from deployments.local_server import LOCAL_API_VARIABLE, answering_prefect_api, free_port, prefect_api

    os.environ[LOCAL_API_VARIABLE] = ""  # measure the temporary server, never a running `make server`
    probes = []
    for _ in range(20):  # what every command pays to look for a running local server
        began = time.perf_counter()
        answering_prefect_api(f"http://127.0.0.1:{free_port()}/api")
        probes.append(time.perf_counter() - began)

    starts, stops, per_task = [], [], []
    for _ in range(1):
        started = time.perf_counter()
        with prefect_api() as server:
            server.wait()
            starts.append(time.perf_counter() - started)
            from prefect import flow, task

            @task
            def trivial(i: int) -> int:
                return i + 1

            @flow
            def many(n: int) -> int:
                return sum(trivial(i) for i in range(n))

            many(1)  # the first flow run pays for client set-up: not a per-task cost
            began = time.perf_counter()
            many(args.tasks)
            flow_s = time.perf_counter() - began
            began = time.perf_counter()
            sum(trivial.fn(i) for i in range(args.tasks))
            plain_s = time.perf_counter() - began
            per_task.append((flow_s - plain_s) / args.tasks)
            stopping = time.perf_counter()
        stops.append(time.perf_counter() - stopping)
    import json

    print(json.dumps({"start": starts[0], "stop": stops[0], "per_task": per_task[0],
                      "probe": statistics.median(probes)}))


def report(starts, stops, per_task, probes, tasks: int) -> None:
    print(f"temporary server start (spawn -> healthy) {spread(starts)}")
    print(f"temporary server stop (drain + stop)      {spread(stops)}")
    print(f"fixed cost, start + stop                  {statistics.median(starts) + statistics.median(stops):8.2f} s "
          "(target <= 1.5 s)")
    print(f"per task, {tasks} trivial tasks in a flow        {spread(per_task, 'ms', 1000)}")
    print(f"look for a running local server (none there)  {spread(probes, 'ms', 1000)}  (with `make server` "
          "running, this is the whole fixed cost)")


if __name__ == "__main__":
    main()
