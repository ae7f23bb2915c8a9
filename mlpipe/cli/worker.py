"""`make worker`: `prefect worker start` for the project's work pool, watched. Prefect's worker
keeps retrying a server that has gone (one ignored SIGTERM for 45 s): here, once the server has
not answered its health check for MLPIPE_WORKER_SERVER_GRACE_S seconds (default 60), the worker
is stopped (SIGTERM, then SIGKILL 10 s later) and this exits 1 with one line saying why. A
SIGTERM or Ctrl-C to this process reaches the worker the same way, also bounded. When the work
pool has a concurrency limit (flow runs at once), the worker's flow runs get it as
MLPIPE_PARALLEL_RUNS, so each fit takes its share of the cores (`compute.threads`).

    python -m mlpipe.cli.worker [--pool mlpipe-process]      (PREFECT_API_URL names the server)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from mlpipe.cli.local_server import answering_prefect_api, terminate

GRACE_VARIABLE = "MLPIPE_WORKER_SERVER_GRACE_S"
DEFAULT_GRACE_S = 60.0


def watch(args: list[str], api_url: str, grace_s: float, poll_s: float = 5.0, stop_s: float = 10.0,
          say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> int:
    """Run `args` while the Prefect API at `api_url` answers; its exit code, or 1 once the API has
    been silent for `grace_s` seconds (the process stopped: SIGTERM, SIGKILL after `stop_s`)."""
    process = subprocess.Popen(args)

    def stop(signum, _frame) -> None:
        terminate(process, timeout=stop_s)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    silent_since: float | None = None
    while process.poll() is None:
        time.sleep(poll_s)
        if answering_prefect_api(api_url, timeout=min(poll_s, 5.0)):
            silent_since = None
            continue
        now = time.monotonic()
        if silent_since is None:
            silent_since = now
            say(f"worker: the Prefect API at {api_url} does not answer; waiting up to {grace_s:.0f} s for it")
        elif now - silent_since >= grace_s:
            terminate(process, timeout=stop_s)
            say(f"error: cannot reach the Prefect API at {api_url}: no answer for {grace_s:.0f} s; worker stopped. "
                "Start the server again (`make server`), then the worker (`make worker`)")
            return 1
    return process.returncode


def parallel_runs_of(pool: str) -> int | None:
    """The concurrency limit of work pool `pool` (how many flow runs it runs at once), or None
    when it has none or cannot be read."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_work_pool(pool).concurrency_limit
    except Exception:  # noqa: BLE001 - no pool yet, or no answer: the worker reports that itself
        return None
    return limit if limit and limit > 0 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Prefect worker that stops when its server has gone.")
    parser.add_argument("--pool", default="mlpipe-process")
    options = parser.parse_args(argv)
    api_url = os.environ.get("PREFECT_API_URL", "")
    if not api_url:
        from mlpipe.cli.project_server import project_server_api

        api_url = project_server_api() or ""
        os.environ["PREFECT_API_URL"] = api_url
    if not api_url:
        sys.exit("error: no Prefect server for the worker: start one (`make server`) or set PREFECT_API_URL")
    try:
        grace_s = float(os.environ.get(GRACE_VARIABLE) or DEFAULT_GRACE_S)
    except ValueError:
        sys.exit(f"error: {GRACE_VARIABLE}={os.environ[GRACE_VARIABLE]!r}: expected seconds")
    from mlpipe.compute.evaluation_units import RUNS_VARIABLE

    if not os.environ.get(RUNS_VARIABLE) and (runs := parallel_runs_of(options.pool)):
        os.environ[RUNS_VARIABLE] = str(runs)  # the flow runs' environment: a share of the cores each
        print(f"worker: pool {options.pool} runs up to {runs} flows at once; each fit uses at most 1/{runs} of "
              "the cores", file=sys.stderr, flush=True)
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    sys.exit(watch([prefect, "worker", "start", "--pool", options.pool], api_url, grace_s))


if __name__ == "__main__":
    main()
