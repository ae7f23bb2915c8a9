"""`mlpipe`: the command line of the pipelines.

    mlpipe train --config conf/churn.yaml [--data URI] [--set model.family=random_forest ...]
"""

from __future__ import annotations

import os

# Before Prefect is imported: no analytics (it also causes SQLite "database is locked" noise
# on the temporary server).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# MLflow's client retries a refused connection 7 times with a backoff factor of 2: about four
# minutes of silence before a traceback. A command waits at most about 20 s for a tracking server
# that went away (retries after 0, 2, 4 and 8 s, plus up to 1 s of jitter each), saying so at each
# retry; set these variables to wait longer (docs/operations.md).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tabular ML training pipelines on Prefect + MLflow.")
console = Console(highlight=False, soft_wrap=True)
err_console = Console(highlight=False, soft_wrap=True, stderr=True)


class _RetryLine(logging.Filter):
    """urllib3's warning at each retry of an HTTP call (MLflow's client) as one line saying what
    it waits for and why, instead of the retry object's repr."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Retrying (") and len(record.args or ()) == 3:
            retry, error, _path = record.args
            cause = "connection refused" if "refused" in str(error).lower() else type(error).__name__
            server = os.environ.get("MLFLOW_TRACKING_URI", "the server")
            from mlpipe.core.lineage import redact_uri

            record.msg, record.args = "waiting for %s (%s): retrying, %s attempt(s) left", (
                redact_uri(server), cause, getattr(retry, "total", "?"))
        return True


class _PrefectRetryLine(logging.Filter):
    """Prefect's client says only at DEBUG that it retries a call: each such record becomes one
    WARNING line saying what it waits for; the logger's other records pass as its level did."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    @staticmethod
    def _cause(message: str, exc_info) -> str:
        """"answered 503", "ConnectError: ...", or "no answer" when the record says neither."""
        if "retryable status code " in message:
            return "answered " + message.split("retryable status code ", 1)[1].split(".", 1)[0]
        if exc_info and exc_info[1] is not None:
            return f"{type(exc_info[1]).__name__}: {str(exc_info[1])[:120]}".rstrip(": ")
        return "no answer"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Another attempt will be made in " not in message:
            return record.levelno >= self.level
        wait = message.split("Another attempt will be made in ", 1)[1].split("s. ", 1)[0]
        attempt = message.rsplit("This is attempt ", 1)[-1].rstrip(".")
        record.msg, record.args = "waiting for the Prefect API at %s: %s; retrying in %.1f s (attempt %s)", (
            os.environ.get("PREFECT_API_URL", "?"), self._cause(message, record.exc_info), float(wait), attempt)
        record.levelno, record.levelname, record.exc_info, record.exc_text = logging.WARNING, "WARNING", None, None
        return True


def _say_prefect_retries() -> None:
    """After Prefect has set up its logging: its client's retries, one line each (`_PrefectRetryLine`)."""
    client_logger = logging.getLogger("prefect.client")
    if not any(isinstance(f, _PrefectRetryLine) for f in client_logger.filters):
        client_logger.addFilter(_PrefectRetryLine(client_logger.getEffectiveLevel()))
        client_logger.setLevel(logging.DEBUG)


@app.callback()
def main() -> None:
    """Tabular ML training pipelines on Prefect + MLflow."""
    logging.getLogger("urllib3.connectionpool").addFilter(_RetryLine())


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


PREFECT_REMEDY = ("start it (`make server` for http://127.0.0.1:4200/api), or unset PREFECT_API_URL to run on a "
                  "local server mlpipe starts")
TRACKING_REMEDY = ("start it (`make mlflow-server` for http://127.0.0.1:5000), or unset MLFLOW_TRACKING_URI for the "
                   "project's local store")


def _unreachable(tracking: bool = True, prefect: bool = True) -> tuple[str, str, str, str] | None:
    """(what, URL, cause, remedy) of the first configured server that does not answer: the MLflow
    tracking server (an http MLFLOW_TRACKING_URI), then the Prefect API (PREFECT_API_URL); None
    when those asked about answer or are not configured."""
    from mlpipe.cli.local_server import no_answer
    from mlpipe.core.lineage import redact_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if tracking else ""  # unset: the local store, nothing to reach
    if uri.startswith(("http://", "https://")) and (cause := no_answer(uri.rstrip("/") + "/health")):
        return "the MLflow tracking server", redact_uri(uri), cause, TRACKING_REMEDY
    url = os.environ.get("PREFECT_API_URL", "") if prefect else ""
    if url and (cause := no_answer(url.rstrip("/") + "/health")):
        return "the Prefect API", url, cause, PREFECT_REMEDY
    return None


def _fail_unreachable(found: tuple[str, str, str, str], debug: bool, error: BaseException | None = None,
                      remedy: str | None = None) -> None:
    what, url, cause, default_remedy = found
    _fail(f"cannot reach {what} at {url}: {cause}; {remedy or default_remedy}", debug, error)


def _require_servers(debug: bool = False, tracking: bool = True, prefect: bool = True,
                     remedy: str | None = None) -> None:
    """Configured servers that do not answer: one `error: cannot reach ...` line, at once, before
    Prefect's or MLflow's client would retry for minutes and end in a wall of traceback."""
    if found := _unreachable(tracking, prefect):
        _fail_unreachable(found, debug, remedy=remedy)


@contextlib.contextmanager
def _servers_named_on_error(debug: bool, tracking: bool = True, prefect: bool = True) -> Iterator[None]:
    """An error raised inside, while a configured server no longer answers: the one `cannot
    reach` line instead of the client's traceback (kept with --debug)."""
    try:
        yield
    except Exception as error:
        if found := _unreachable(tracking, prefect):
            _fail_unreachable(found, debug, error)
        raise


def _run_flow(flow_name: str, config: Path, overrides: list[str], data: str | None, refresh: bool, debug: bool,
              show: Callable[[object, float, bool], None]) -> None:
    """Load the config, run the train or tune flow (`_run_on_prefect`)."""

    def prepare() -> Callable[[], object]:
        from mlpipe.core.config import ConfigError, load_config

        try:
            pipeline_config = load_config(config, overrides, data)
        except ConfigError as error:
            _fail(str(error), debug, error)
        if flow_name == "tune":
            from mlpipe.flows.tuning import tune as flow_fn
        else:
            from mlpipe.flows.training import train as flow_fn
        return lambda: flow_fn(config=pipeline_config, refresh=refresh, return_state=True)

    _run_on_prefect(flow_name, prepare, debug, show)


def _run_on_prefect(flow_name: str, prepare: Callable[[], Callable[[], object]], debug: bool,
                    show: Callable[[object, float, bool], None]) -> None:
    """Run one flow on the configured Prefect server (or the local one mlpipe keeps,
    mlpipe/cli/local_server.py): `prepare()` (while the server boots) returns the call that runs
    it. Print its result with `show`, or one error line and exit 1; a server that stops answering
    meanwhile is named in that line."""
    from mlpipe.cli.local_server import imports_without_gc, prefect_api, server_idle_seconds

    started = time.perf_counter()
    try:
        server_idle_seconds()
    except ValueError as error:
        _fail(str(error), debug, error)
    _require_servers(debug)
    with prefect_api() as temporary_server:  # boots while the libraries below import
        with imports_without_gc():
            run_flow = prepare()
            from mlpipe.tasks.ownership import owned_by_this_process

        _console_tracebacks(debug)
        _say_prefect_retries()
        try:
            if temporary_server is None:
                with owned_by_this_process():  # a later run marks it Crashed if this process is killed
                    state = run_flow()
            else:
                temporary_server.wait()
                with _without_heartbeats(), owned_by_this_process():
                    state = run_flow()
        except Exception as error:  # the engine's own calls to a server that went away
            _fail_on_error(error, flow_name, debug)
        _quiet_shutdown_noise()
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            if isinstance(error, BaseException):
                _fail_on_error(error, flow_name, debug)
            _fail(f"the {flow_name} flow ended {state.type.value}: {state.message}", debug)
        show(state.result(), time.perf_counter() - started, temporary_server is not None)


def _fail_on_error(error: BaseException, flow_name: str, debug: bool) -> None:
    """One line for a failed run: `cannot reach ...` when a configured server no longer answers
    (it went away during the run), else the error itself."""
    _quiet_shutdown_noise()
    if found := _unreachable():
        _fail_unreachable(found, debug, error)
    _fail(f"{type(error).__name__}: {error}", debug, error)


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


ModelOption = Annotated[str, typer.Option("--model", help="Registered model name")]
RefOption = Annotated[str, typer.Option("--ref", help="Alias (champion, challenger) or version number")]


@app.command()
def score(
    data: Annotated[str, typer.Option("--data", help="Dataset to score (CSV or Parquet, local or s3://)")],
    output: Annotated[str, typer.Option("--output", help="Parquet file to write (atomically)")],
    model: ModelOption = "churn-classifier", ref: RefOption = "champion", debug: DebugOption = False,
) -> None:
    """Run the `score` flow: a registered model over a dataset, predictions out as Parquet."""

    def prepare() -> Callable[[], object]:
        from mlpipe.flows.batch_inference import score as score_flow

        return lambda: score_flow(data_uri=data, output_uri=output, model_name=model, model_ref=ref,
                                  return_state=True)

    def show(summary, seconds: float, _temporary: bool) -> None:
        console.print(f"scored     {summary.rows_scored} of {summary.rows_in} rows ({summary.rows_rejected} rejected) "
                      f"with {summary.model_name} v{summary.model_version}")
        console.print(f"output     {summary.output_uri}")
        console.print(f"time       {seconds:.1f} s")

    _run_on_prefect("score", prepare, debug, show)


@app.command()
def drift(
    data: Annotated[str, typer.Option("--data", help="New data to compare with the model's training data")],
    model: ModelOption = "churn-classifier", ref: RefOption = "champion", debug: DebugOption = False,
) -> None:
    """Run the `drift-monitor` flow: has new data drifted from what the model was trained on?"""

    def prepare() -> Callable[[], object]:
        from mlpipe.flows.monitoring import drift_monitor

        return lambda: drift_monitor(data_uri=data, model_name=model, model_ref=ref, return_state=True)

    def show(report, seconds: float, _temporary: bool) -> None:
        verdict = "drifted: " + "; ".join(report.reasons) if report.drifted else "no drift"
        console.print(f"drift      {report.model_name} v{report.model_version}: {verdict}")
        console.print(f"rows       {report.rows_current} new vs {report.rows_reference} trained on")
        console.print(f"time       {seconds:.1f} s")

    _run_on_prefect("drift-monitor", prepare, debug, show)


@app.command()
def deploy(pool: Annotated[str, typer.Option("--pool", help="Process work pool to create/use")] = "mlpipe-process",
           debug: DebugOption = False) -> None:
    """Create the process work pool if missing, then `prefect deploy --all` from prefect.yaml."""
    from mlpipe.core.paths import PACKAGE_ROOT
    from mlpipe.deployments.deploy import DeployError, deploy_all

    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: start a server (`make server`) and export "
              "PREFECT_API_URL=http://127.0.0.1:4200/api", debug=False)
    _require_servers(debug, tracking=False, remedy="start it (`make server`), then deploy again")
    try:
        with _servers_named_on_error(debug, tracking=False):
            deploy_all(pool, PACKAGE_ROOT, say=console.print)
    except DeployError as error:
        _fail(str(error), debug=False)
    console.print(f"deployed prefect.yaml; start a worker with `make worker` (pool {pool})")


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="Version to make champion again")],
    model: Annotated[str, typer.Option("--model", help="Registered model name")] = "churn-classifier",
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the promotion history")] = "manual rollback",
    debug: DebugOption = False,
) -> None:
    """Point `champion` back at an earlier version (it must load); recorded in the history."""
    from mlpipe.adapters.mlflow.aliases import RollbackError
    from mlpipe.adapters.mlflow.aliases import rollback as rollback_to

    _require_servers(debug, prefect=False)
    try:
        with _servers_named_on_error(debug, prefect=False):
            previous = rollback_to(model, to, reason)
    except RollbackError as error:
        _fail(f"rollback of {model} to v{to} failed: {error}", debug=False)
    console.print(f"{model}: champion v{previous} -> v{to} ({reason})")


@app.command()
def history(model: Annotated[str, typer.Option("--model", help="Registered model name")] = "churn-classifier",
            show_all: Annotated[bool, typer.Option("--all", help="Also the reruns that changed nothing")] = False,
            debug: DebugOption = False) -> None:
    """Which version was champion when, and why (promotions, challengers, rollbacks)."""
    from mlpipe.adapters.mlflow.aliases import is_no_op, promotion_history

    _require_servers(debug, prefect=False)
    table = Table("when", "action", "version", "previous champion", "reason")
    with _servers_named_on_error(debug, prefect=False):
        entries = promotion_history(model)
    shown = entries if show_all else [entry for entry in entries if not is_no_op(entry)]
    for entry in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(entry["at"]) / 1000))
        action = entry.get("action", "") + (" (pending)" if entry.get("entry") == "pending" else "")
        table.add_row(when, action, entry.get("version", ""), entry.get("previous_champion", ""),
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
