"""`make bench`: run the ratio benchmarks one after another and write benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py [--only recipe,recipe-first,orchestration,plain,cache,batch,validate,memory]
                                           [--tables ...] [--repeats 3]

Each benchmark runs as its own process, one at a time (they measure wall time: run them on a
quiet machine). Their tables are printed as they finish and written, with the date, the
machine's cores and the thread settings, to benchmarks/RESULTS.md. Not part of `make test`.

- recipe:        `mlpipe train` vs the seed's plain script (benchmarks/pipeline_vs_recipe.py),
                 median/min/max of alternating runs, ratio target <= 1.0x, with the local
                 Prefect server mlpipe keeps between commands already up;
- recipe-first:  the same on sample-7k with a server started and stopped by each command
                 (MLPIPE_SERVER_IDLE_S=0), as a session's first command pays;
- orchestration: the local Prefect server's start + stop (first, next, one-command) and the per-task cost
                 (benchmarks/orchestration.py), target <= 1.5 s;
- plain:         `mlpipe train` against the same steps with no Prefect (benchmarks/plain_train.py)
                 on 200k rows, target <= 1.15x;
- cache:         an identical cached rerun against the cold run (benchmarks/cache.py),
                 target <= 30%;
- batch:         batch scoring of 1M rows against a bare read_csv + predict
                 (benchmarks/batch_score.py), target <= 1.3x;
- validate:      validation of 1M rows beside reading them (benchmarks/validate.py),
                 target <= 3 s;
- memory:        peak resident memory of `mlpipe train` on 1M rows against the frame read
                 (benchmarks/peak_memory.py), target <= 4x.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def benchmarks(tables: str, repeats: int) -> dict[str, list[str]]:
    here = Path(__file__).resolve().parent
    return {
        "recipe": [str(here / "pipeline_vs_recipe.py"), "--tables", tables, "--repeats", str(repeats)],
        "recipe-first": [str(here / "pipeline_vs_recipe.py"), "--tables", "sample-7k", "--repeats", str(repeats),
                         "--server", "one-command"],
        "orchestration": [str(here / "orchestration.py"), "--repeats", str(repeats)],
        "cache": [str(here / "cache.py"), "--repeats", str(repeats)],
        "batch": [str(here / "batch_score.py"), "--repeats", str(repeats)],
        "plain": [str(here / "plain_train.py"), "--compare", "--rows", "200000", "--repeats", str(repeats)],
        "validate": [str(here / "validate.py"), "--repeats", str(repeats)],
        "memory": [str(here / "peak_memory.py"), "--repeats", str(repeats)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="recipe,recipe-first,orchestration,plain,cache,batch,validate,memory")
    parser.add_argument("--tables", default="sample-7k,telco-7k,sample-200k",
                        help="for recipe; add sample-1m for the 1M-row row (about 10 minutes more)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = [
        "# Benchmark results",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"load average at start {load:.2f}",
        "- threads: " + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES),
        f"- command: `make bench` (benchmarks/run_all.py --only {args.only} --tables {args.tables} "
        f"--repeats {args.repeats})",
        "",
    ]
    sections = []
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    for name in chosen:
        command = [sys.executable, *benchmarks(args.tables, args.repeats)[name]]
        print(f"== {name}: {' '.join(Path(c).name if c.startswith(str(ROOT)) else c for c in command[1:])}",
              flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        output = done.stdout.strip() or done.stderr.strip()[-3000:]
        print(output, flush=True)
        status = "" if done.returncode == 0 else f" (FAILED, exit {done.returncode})"
        sections += [f"## {name}{status}", "", f"{time.perf_counter() - started:.0f} s of wall time.", "",
                     "```", output, "```", ""]
    args.results.write_text("\n".join(header + sections))
    print(f"wrote {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}")


if __name__ == "__main__":
    main()
