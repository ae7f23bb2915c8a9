"""A temporary local Prefect API for one `mlpipe` command when no PREFECT_API_URL is set.

Prefect would start the same server itself on first use, but only after the pipeline's
libraries have imported, and would stop it from an exit hook that logs tracebacks as
events fail to flush. Starting it first lets it boot on the second core while Python imports,
and stopping it ourselves, after the summary, keeps the terminal clean.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


TEMPORARY_API_VARIABLE = "MLPIPE_TEMPORARY_PREFECT_API"  # names the API that dies with this command


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll `url` until it answers 200; fail early if `process` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server process exited with code {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class TemporaryPrefectServer:
    """Start on construction (returns at once), `wait()` until healthy, `stop()` at the end."""

    def __init__(self, host: str = "127.0.0.1"):
        import importlib.util

        self.port = free_port(host)
        self.api_url = f"http://{host}:{self.port}/api"
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", host, "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float = 90.0) -> None:
        try:
            wait_healthy(f"{self.api_url}/health", self.process, timeout)
        except RuntimeError as error:
            stderr = self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"the temporary Prefect server did not start: {error}\n{stderr}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send Prefect's queued logs and events while the server is still up; otherwise they
    are retried against a stopped server at exit, for a minute, with tracebacks."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout, at_exit=False)


# Where `make server` (`prefect server start`) listens. Set MLPIPE_LOCAL_PREFECT_API to another
# URL, or to "" to never reuse one.
LOCAL_API_VARIABLE = "MLPIPE_LOCAL_PREFECT_API"
DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"


def answering_prefect_api(api_url: str, timeout: float = 0.3) -> bool:
    """Whether a Prefect API answers its health check at `api_url` (quick: a refused local
    connection fails in well under a millisecond)."""
    if not api_url:
        return False
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200 and response.read(16).strip() == b"true"
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def prefect_api() -> Iterator[TemporaryPrefectServer | None]:
    """With PREFECT_API_URL set, yield None and use that server. Else, when a local Prefect
    server already answers (`make server`, MLPIPE_LOCAL_PREFECT_API), use it: no start-up cost,
    and the runs stay in its UI. Else start a temporary local server, point PREFECT_API_URL at
    it and yield it (call `.wait()` before the first flow). Enter this before Prefect is
    imported: Prefect reads its settings at import."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    local = os.environ.get(LOCAL_API_VARIABLE, DEFAULT_LOCAL_API)
    if answering_prefect_api(local):
        os.environ["PREFECT_API_URL"] = local
        try:
            yield None
        finally:
            _drain_prefect_workers()
            os.environ.pop("PREFECT_API_URL", None)
        return
    server = TemporaryPrefectServer()
    os.environ["PREFECT_API_URL"] = os.environ[TEMPORARY_API_VARIABLE] = server.api_url
    try:
        yield server
    finally:
        _drain_prefect_workers()
        server.stop()
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop(TEMPORARY_API_VARIABLE, None)
