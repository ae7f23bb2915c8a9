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
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tabular ML training pipelines on Prefect + MLflow.")
console = Console(highlight=False, soft_wrap=True)
err_console = Console(highlight=False, soft_wrap=True, stderr=True)


@app.callback()
def main() -> None:
    """Tabular ML training pipelines on Prefect + MLflow."""


def _quiet_shutdown_noise() -> None:
    """The temporary Prefect server logs tracebacks while the process exits (events it can no
    longer flush); they say nothing about the run, so a user's terminal should end on the summary."""
    for name in ("prefect", "prefect.events.clients", "prefect.server", "prefect._internal.concurrency",
                 "prefect.server.events", "uvicorn.error", "prefect.server.services"):
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
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


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
    console.print(f"mlflow     run {summary.run_id}  ->  mlflow ui --backend-store-uri {summary.tracking_uri}")
    prefect_ui = os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    console.print("prefect    " + ("ran on a temporary server; `prefect server start` and set PREFECT_API_URL "
                                   "to keep runs in the UI" if temporary_server else f"{prefect_ui}/runs"))
    console.print(f"time       {seconds:.1f} s")


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML")] = Path("conf/churn.yaml"),
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset URI (overrides data.uri)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Recompute cached steps")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Full tracebacks on errors")] = False,
) -> None:
    """Run the `train` flow: load, validate, split, fit, evaluate, register, promote."""
    from deployments.local_server import prefect_api

    started = time.perf_counter()
    with prefect_api() as temporary_server:  # boots while the libraries below import
        from tasks.config import ConfigError, load_config

        try:
            pipeline_config = load_config(config, overrides or [], data)
        except ConfigError as error:
            _fail(str(error), debug, error)

        from flows.training import train as train_flow

        _console_tracebacks(debug)
        if temporary_server is not None:
            temporary_server.wait()
        state = train_flow(config=pipeline_config, refresh=refresh, return_state=True)
        _quiet_shutdown_noise()
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            if isinstance(error, BaseException):
                _fail(f"{type(error).__name__}: {error}", debug, error)
            _fail(f"the train flow ended {state.type.value}: {state.message}", debug)
        _print_summary(state.result(), time.perf_counter() - started, temporary_server is not None)


if __name__ == "__main__":
    sys.exit(app())
