"""The local Prefect API an `mlpipe` command uses when no PREFECT_API_URL is set.

Prefect would start a server itself on first use, for the one process, but only after the
pipeline's libraries have imported (2-3 s of its own imports on every command), and would stop
it from an exit hook that logs tracebacks as events fail to flush. Instead the first command
starts one detached (mlpipe/cli/kept_server.py) while Python imports, and the next commands
reuse it; it exits by itself after MLPIPE_SERVER_IDLE_S seconds (default 600) with no command.
MLPIPE_SERVER_IDLE_S=0 gives the server for one command, stopped after the summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
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


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while a process imports its libraries, then every
    object made so far moved out of its reach (`gc.freeze`) and the collector back on. While
    modules import, the heap grows by hundreds of thousands of objects that live as long as the
    process, and each collection it triggers walks them again: an `mlpipe` command's imports took
    4.4-5.6 s with it and 3.7-5.4 s without (alternating), the kept server's start (spawn ->
    healthy) 4.24-5.34 s and 3.73-4.54 s. After the freeze, the collections during the run (and
    `release_free_memory`'s) walk only what the run made."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class TemporaryPrefectServer:
    """Start on construction (returns at once), `wait()` until healthy, `stop()` at the end."""

    def __init__(self, host: str = "127.0.0.1"):
        self.port = free_port(host)
        self.api_url = f"http://{host}:{self.port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.process = subprocess.Popen(  # the kept server's start, without its lease: until stop()
            [sys.executable, "-P", "-m", "mlpipe.cli.kept_server", "--host", host, "--port", str(self.port)],
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
        terminate(self.process)


def terminate(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM `process` and reap it; SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# How long the local server outlives the last command that used it; 0 stops it with the command.
IDLE_VARIABLE = "MLPIPE_SERVER_IDLE_S"
DEFAULT_IDLE_S = 600.0


def server_idle_seconds() -> float:
    value = os.environ.get(IDLE_VARIABLE, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_IDLE_S
    except ValueError:
        raise ValueError(f"{IDLE_VARIABLE}={value!r}: expected seconds (0 stops the server with the command)") from None
    return max(seconds, 0.0)


SERVER_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ", "VIRTUAL_ENV", "PYTHONPATH")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class KeptPrefectServer:
    """The local server mlpipe commands share (mlpipe/cli/kept_server.py): reused when one
    is up for this interpreter, Prefect version and Prefect home, else started detached. The
    command holds its lease (a shared lock) until `release()`; the server exits by itself once
    no command has held the lease for `idle_s` seconds. `wait()` until healthy, as for
    TemporaryPrefectServer; `stop()` ends it now."""

    start_timeout_s = 120.0  # a server recorded but not answering for longer than this is stale

    def __init__(self, idle_s: float, host: str = "127.0.0.1"):
        from importlib.metadata import version

        home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
        home.mkdir(parents=True, exist_ok=True)
        shaping = sorted((k, v) for k, v in os.environ.items()
                         if k.startswith(("PREFECT_API_DATABASE", "PREFECT_SERVER_DATABASE")))
        key = hashlib.sha256(json.dumps([sys.executable, version("prefect"), str(home), shaping]).encode()).hexdigest()[:12]
        base = home / f"mlpipe-server-{key}"
        self.state_path, self.log_path = base.with_suffix(".json"), base.with_suffix(".log")
        self._lease = os.open(base.with_suffix(".lease"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lease, fcntl.LOCK_SH)  # waits while a server that went idle exits
        self.process: subprocess.Popen | None = None
        with _exclusive(base.with_suffix(".lock")):  # one command starts it, the others reuse it
            state = self._recorded()
            if state is None:
                port = free_port(host)
                # It outlives this command: it gets Prefect's settings and the basics, not the
                # command's credentials (AWS keys, tracking tokens).
                env = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_") or k in SERVER_ENV}
                env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1",
                           PREFECT_SERVER_ANALYTICS_ENABLED="false")
                with open(self.log_path, "wb") as log:
                    self.process = subprocess.Popen(
                        [sys.executable, "-P", "-m", "mlpipe.cli.kept_server", "--host", host, "--port", str(port),
                         "--lease", str(base.with_suffix(".lease")), "--idle", str(idle_s)],
                        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                        start_new_session=True,  # outlives the command; a Ctrl-C in its terminal does not reach it
                    )
                state = {"pid": self.process.pid, "api_url": f"http://{host}:{port}/api", "started": time.time()}
                self.state_path.write_text(json.dumps(state))
        self.pid, self.api_url = state["pid"], state["api_url"]
        self.reused = self.process is None

    def _recorded(self) -> dict | None:
        """The recorded server if it is still ours to use: alive, and answering or still starting."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        pid = state.get("pid")
        if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):  # kill(0 or -1) would probe a group
            return None
        if answering_prefect_api(state.get("api_url", "")):
            return state
        return state if time.time() - state.get("started", 0) < self.start_timeout_s else None

    def wait(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not answering_prefect_api(self.api_url, timeout=2):
            if not _pid_alive(self.pid) or (self.process is not None and self.process.poll() is not None):
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                self.release()
                raise RuntimeError(f"the local Prefect server (pid {self.pid}) exited before it answered\n{log}")
            if time.monotonic() > deadline:
                self.release()
                raise RuntimeError(f"the local Prefect server {self.api_url} did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    def release(self) -> None:
        if self._lease >= 0:
            os.close(self._lease)
            self._lease = -1

    def stop(self) -> None:
        self.release()
        if self.process is not None:  # started by this process: also reap it
            terminate(self.process, timeout=30)
        elif _pid_alive(self.pid):
            os.kill(self.pid, 15)


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


# A Prefect server to reuse when PREFECT_API_URL is not set: by default this project's own `make
# server` (its marker, mlpipe/cli/project_server.py), never whatever answers on a well-known port.
# MLPIPE_LOCAL_PREFECT_API names another server explicitly, or "" turns reuse off.
LOCAL_API_VARIABLE = "MLPIPE_LOCAL_PREFECT_API"


def local_api_to_reuse() -> str | None:
    """The server a command without PREFECT_API_URL may reuse (whether it answers is checked after)."""
    named = os.environ.get(LOCAL_API_VARIABLE)
    if named is not None:
        return named or None
    from mlpipe.cli.project_server import project_server_api

    return project_server_api()


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


def no_answer(url: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers a GET of `url`, in a few words (connection refused, no such host, no
    answer within the timeout), or None when something does. Any HTTP answer counts as a server,
    an error status included (Prefect Cloud answers its health path only with an API key, a
    proxy may ask for credentials)."""
    import socket

    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, socket.gaierror):
            return "no such host"
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return str(reason) or type(reason).__name__


def nothing_answers(url: str, timeout: float = 5.0) -> bool:
    """Whether nothing answers a GET of `url` (see `no_answer`)."""
    return no_answer(url, timeout) is not None


def unreachable_prefect_api(timeout: float = 5.0) -> str | None:
    """The configured PREFECT_API_URL when nothing answers there, else None."""
    url = os.environ.get("PREFECT_API_URL", "")
    return url if url and nothing_answers(url.rstrip("/") + "/health", timeout) else None


@contextlib.contextmanager
def prefect_api() -> Iterator[KeptPrefectServer | TemporaryPrefectServer | None]:
    """With PREFECT_API_URL set, yield None and use that server. Else, when this project's `make
    server` runs and answers (its marker; or the server MLPIPE_LOCAL_PREFECT_API names), use it:
    no start-up cost, and the runs stay in its UI. Else use the local server mlpipe keeps between commands
    (started now if none is up; it exits MLPIPE_SERVER_IDLE_S seconds after the last command),
    or with MLPIPE_SERVER_IDLE_S=0 a temporary server that stops with this command. Points
    PREFECT_API_URL at it and yields it (call `.wait()` before the first flow). Enter this before
    Prefect is imported: Prefect reads its settings at import."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    local = local_api_to_reuse()
    if local and answering_prefect_api(local):
        os.environ["PREFECT_API_URL"] = local
        try:
            yield None
        finally:
            _drain_prefect_workers()
            os.environ.pop("PREFECT_API_URL", None)
        return
    idle_s = server_idle_seconds()
    server = KeptPrefectServer(idle_s) if idle_s > 0 else TemporaryPrefectServer()
    os.environ["PREFECT_API_URL"] = os.environ[TEMPORARY_API_VARIABLE] = server.api_url
    try:
        yield server
    finally:
        _drain_prefect_workers()
        if isinstance(server, KeptPrefectServer):
            server.release()  # the server outlives the command, for the next one
        else:
            server.stop()
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop(TEMPORARY_API_VARIABLE, None)
