"""`mlpipe`: the command line of the pipelines.

    mlpipe train --config conf/churn.yaml [--data URI] [--set model.family=random_forest ...]
"""

from __future__ import annotations

import os

# Before Prefect is imported: no analytics (it also causes SQLite "database is locked" noise
# on the temporary server).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tabular ML training pipelines on Prefect + MLflow.")
console = Console(highlight=False, soft_wrap=True)
err_console = Console(highlight=False, soft_wrap=True, stderr=True)


@app.callback()
def main() -> None:
    """Tabular ML training pipelines on Prefect + MLflow."""


# Prefect's log and event workers log under their class names, not under `prefect`: draining
# at the command's end, they say "Still processing items" after the summary or the error line.
QUIET_AT_END = ("prefect", "prefect.events.clients", "prefect.server", "prefect._internal.concurrency",
                "prefect.server.events", "uvicorn.error", "prefect.server.services", "EventsWorker", "APILogWorker")


def _quiet_shutdown_noise() -> None:
    """The temporary Prefect server logs tracebacks while the process exits (events it can no
    longer flush); they say nothing about the run, so a user's terminal should end on the summary."""
    for name in QUIET_AT_END:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _NoTraceback(logging.Filter):
    """Console only: the error is printed once, as one line, at the end. The full traceback
    still reaches the Prefect API logs (that handler runs before the root console handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _console_tracebacks(show: bool) -> None:
    if not show:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_NoTraceback())


def _fail(message: str, debug: bool, error: BaseException | None = None) -> None:
    if debug and error is not None:
        traceback.print_exception(error)
    err_console.print(f"[bold red]error:[/] {escape(message)}")  # a message's [brackets] are text, not markup
    raise typer.Exit(code=1)


def _server_line(temporary_server: bool) -> str:
    if not temporary_server:
        return os.environ.get("PREFECT_API_URL", "").removesuffix("/api") + "/runs"
    from mlpipe.cli.local_server import server_idle_seconds

    idle = server_idle_seconds()
    kept = (f"the local server mlpipe keeps for {idle / 60:g} min after its last command (MLPIPE_SERVER_IDLE_S)"
            if idle else "a temporary server")
    return f"ran on {kept}; with `make server` running, runs use it and stay in its UI"


def _mlflow_hint(summary) -> str:
    """Where to see the run: a tracking server's page of the version, or, for a local store, the
    command that serves it (`mlflow ui` takes a database URI, never a server's)."""
    uri = summary.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/models/{summary.model_name}/versions/{summary.version}"
    return f"mlflow ui --backend-store-uri {uri} --port 5000, then http://127.0.0.1:5000"


def _print_summary(summary, seconds: float, temporary_server: bool) -> None:
    d = summary.decision
    table = Table(title=f"holdout metrics  {summary.model_name} v{summary.version}", show_header=False)
    for key, value in summary.headline_metrics().items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    colour = "green" if d.alias == "champion" else "yellow"
    console.print(f"model      {summary.model_name} v{summary.version}"
                  + ("  (identical rerun: existing version, nothing new registered)" if summary.reused_version else ""))
    console.print(f"decision   [{colour}]{d.alias}[/]: {d.reason}")
    console.print(f"data       {summary.dataset_uri}  fingerprint {summary.dataset_fingerprint[:30]}")
    console.print(f"mlflow     run {summary.run_id}  ->  {_mlflow_hint(summary)}")
    console.print("prefect    " + _server_line(temporary_server))
    console.print(f"time       {seconds:.1f} s")


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML")]
DataOption = Annotated[Optional[str], typer.Option("--data", help="Dataset URI (overrides data.uri)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value")]
RefreshOption = Annotated[bool, typer.Option("--refresh", help="Recompute cached steps")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Full tracebacks on errors")]


def _without_heartbeats():
    """For runs on the server mlpipe starts: it runs no services, so nothing reads flow-run
    heartbeats, and the end of every flow waited for Prefect's heartbeat thread, which sleeps
    in 1 s steps (0.76 s of a cached rerun of the sample, profiled)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _require_prefect_api(remedy_end: str, debug: bool = False) -> None:
    """A configured Prefect API (PREFECT_API_URL) that does not answer: one error line naming
    it, before Prefect's first call would end in a wall of traceback. Not configured: nothing."""
    from mlpipe.cli.local_server import unreachable_prefect_api

    if url := unreachable_prefect_api():
        _fail(f"the Prefect API at {url} (PREFECT_API_URL) does not answer: start that server (`make server` "
              f"for http://127.0.0.1:4200/api){remedy_end}", debug)


def _run_flow(flow_name: str, config: Path, overrides: list[str], data: str | None, refresh: bool, debug: bool,
              show: Callable[[object, float, bool], None]) -> None:
    """Load the config, run one flow on the configured Prefect server (or the local one
    mlpipe keeps, mlpipe/cli/local_server.py), print its result with `show`, or one error line
    and exit 1."""
    from mlpipe.cli.local_server import imports_without_gc, prefect_api, server_idle_seconds

    started = time.perf_counter()
    try:
        server_idle_seconds()
    except ValueError as error:
        _fail(str(error), debug, error)
    _require_prefect_api(", or unset PREFECT_API_URL to run on a local server mlpipe starts", debug)
    with prefect_api() as temporary_server:  # boots while the libraries below import
        with imports_without_gc():
            from mlpipe.core.config import ConfigError, load_config

            try:
                pipeline_config = load_config(config, overrides, data)
            except ConfigError as error:
                _fail(str(error), debug, error)

            if flow_name == "tune":
                from mlpipe.flows.tuning import tune as flow_fn
            else:
                from mlpipe.flows.training import train as flow_fn

        _console_tracebacks(debug)
        if temporary_server is None:
            state = flow_fn(config=pipeline_config, refresh=refresh, return_state=True)
        else:
            temporary_server.wait()
            with _without_heartbeats():
                state = flow_fn(config=pipeline_config, refresh=refresh, return_state=True)
        _quiet_shutdown_noise()
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            if isinstance(error, BaseException):
                _fail(f"{type(error).__name__}: {error}", debug, error)
            _fail(f"the {flow_name} flow ended {state.type.value}: {state.message}", debug)
        show(state.result(), time.perf_counter() - started, temporary_server is not None)


@app.command()
def train(config: ConfigOption = Path("conf/churn.yaml"), data: DataOption = None, overrides: SetOption = None,
          refresh: RefreshOption = False, debug: DebugOption = False) -> None:
    """Run the `train` flow: load, validate, split, tune (if configured), fit, evaluate, register, promote."""
    _run_flow("train", config, overrides or [], data, refresh, debug, _print_summary)


@app.command()
def tune(
    config: ConfigOption = Path("conf/churn.yaml"),
    trials: Annotated[Optional[int], typer.Option("--trials", help="Finished trials in total (resumes included)")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Parallel trial workers")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="local or ray (RAY_ADDRESS for a cluster)")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds before no new trial starts")] = None,
    data: DataOption = None, overrides: SetOption = None, refresh: RefreshOption = False, debug: DebugOption = False,
) -> None:
    """Run the `tune` flow: an Optuna study of the model family's search space (resumable)."""
    extra = [f"tuning.{key}={value}" for key, value in
             (("trials", trials), ("workers", workers), ("backend", backend), ("timeout_s", timeout))
             if value is not None]
    _run_flow("tune", config, [*(overrides or []), *extra], data, refresh, debug, _print_tuning)


@app.command()
def deploy(pool: Annotated[str, typer.Option("--pool", help="Process work pool to create/use")] = "mlpipe-process") -> None:
    """Create the process work pool if missing, then `prefect deploy --all` from prefect.yaml."""
    from mlpipe.core.paths import PACKAGE_ROOT
    from mlpipe.deployments.deploy import DeployError, deploy_all

    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: start a server (`make server`) and export "
              "PREFECT_API_URL=http://127.0.0.1:4200/api", debug=False)
    _require_prefect_api(" before deploying")
    try:
        deploy_all(pool, PACKAGE_ROOT, say=console.print)
    except DeployError as error:
        _fail(str(error), debug=False)
    console.print(f"deployed prefect.yaml; start a worker with `make worker` (pool {pool})")


def _require_tracking_server() -> None:
    """An MLflow tracking server that does not answer: one error line naming it, at once (the
    client would retry for minutes in silence, then print a traceback). A local store: nothing."""
    from mlpipe.adapters.mlflow.tracking import tracking_uri
    from mlpipe.cli.local_server import nothing_answers
    from mlpipe.core.lineage import redact_uri

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")) and nothing_answers(uri.rstrip("/") + "/health"):
        _fail(f"the MLflow tracking server at {redact_uri(uri)} (MLFLOW_TRACKING_URI) does not answer: start it "
              "(`make mlflow-server` for http://127.0.0.1:5000), or unset MLFLOW_TRACKING_URI for the "
              "project's local store", debug=False)


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="Version to make champion again")],
    model: Annotated[str, typer.Option("--model", help="Registered model name")] = "churn-classifier",
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the promotion history")] = "manual rollback",
) -> None:
    """Point `champion` back at an earlier version (it must load); recorded in the history."""
    from mlpipe.adapters.mlflow.aliases import RollbackError
    from mlpipe.adapters.mlflow.aliases import rollback as rollback_to

    _require_tracking_server()
    try:
        previous = rollback_to(model, to, reason)
    except RollbackError as error:
        _fail(f"rollback of {model} to v{to} failed: {error}", debug=False)
    console.print(f"{model}: champion v{previous} -> v{to} ({reason})")


@app.command()
def history(model: Annotated[str, typer.Option("--model", help="Registered model name")] = "churn-classifier",
            show_all: Annotated[bool, typer.Option("--all", help="Also the reruns that changed nothing")] = False,
            ) -> None:
    """Which version was champion when, and why (promotions, challengers, rollbacks)."""
    from mlpipe.adapters.mlflow.aliases import is_no_op, promotion_history

    _require_tracking_server()
    table = Table("when", "action", "version", "previous champion", "reason")
    entries = promotion_history(model)
    shown = entries if show_all else [entry for entry in entries if not is_no_op(entry)]
    for entry in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(entry["at"]) / 1000))
        table.add_row(when, entry.get("action", ""), entry.get("version", ""), entry.get("previous_champion", ""),
                      entry.get("reason", ""))
    console.print(table)
    if len(shown) < len(entries):
        console.print(f"{len(entries) - len(shown)} rerun(s) of the champion that changed nothing not shown (--all)")


def _print_tuning(result, seconds: float, temporary_server: bool) -> None:
    table = Table(title=f"best parameters  (trial {result.best_trial})", show_header=False)
    for key, value in result.best_params.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"best       cv {result.metric} {result.best_value:.4f}")
    console.print(f"trials     {result.complete} complete, {result.pruned} pruned, {result.failed} failed")
    console.print(f"study      {result.study_name}")
    console.print(f"mlflow     run {result.parent_run_id} (one nested run per trial)")
    console.print(f"time       {seconds:.1f} s")


def run() -> None:
    """The `mlpipe` command (pyproject's entry point). Once the command is done, the exit
    handlers run and the output is flushed as in a normal exit, then the process ends with
    `os._exit`: the interpreter's own teardown of the torch, MLflow, scikit-learn and Prefect
    modules took 1.3-1.5 s of every command (measured on the bundled sample) and does nothing a
    command needs. With a non-daemon thread still running, it exits normally, which waits for it."""
    import atexit
    import threading

    try:
        app()
        code: int | str | None = 0
    except SystemExit as stop:
        code = stop.code
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # logging.shutdown, MLflow's and Prefect's flushes: what sys.exit would run
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
