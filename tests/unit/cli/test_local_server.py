"""mlpipe.cli.local_server: which Prefect API a command uses when PREFECT_API_URL is not set."""

from __future__ import annotations

import gc
import http.server
import os
import threading
import weakref
from pathlib import Path

import pytest

from mlpipe.cli.local_server import (
    LOCAL_API_VARIABLE,
    answering_prefect_api,
    free_port,
    imports_without_gc,
    prefect_api,
)


class _Health(http.server.BaseHTTPRequestHandler):
    body = b"true"

    def do_GET(self):  # noqa: N802 (the http.server name)
        ok = self.path == "/api/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(self.body if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_local_prefect_server_that_answers_is_reused(health_server, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(LOCAL_API_VARIABLE, health_server)
    with prefect_api() as temporary:
        assert temporary is None and os.environ["PREFECT_API_URL"] == health_server
    assert "PREFECT_API_URL" not in os.environ


def test_the_health_check_needs_a_prefect_answer(health_server, monkeypatch):
    assert answering_prefect_api(health_server)
    assert not answering_prefect_api(health_server.removesuffix("/api") + "/other")  # 404
    monkeypatch.setattr(_Health, "body", b"<html>")
    assert not answering_prefect_api(health_server)  # something else on the port
    assert not answering_prefect_api(f"http://127.0.0.1:{free_port()}/api")  # nothing listening
    assert not answering_prefect_api("")  # reuse turned off


def test_a_set_api_url_wins(health_server, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://example.invalid/api")
    monkeypatch.setenv(LOCAL_API_VARIABLE, health_server)
    with prefect_api() as temporary:
        assert temporary is None and os.environ["PREFECT_API_URL"] == "http://example.invalid/api"


def test_a_server_answering_on_a_port_is_not_used_unless_this_project_started_it(health_server, monkeypatch,
                                                                                tmp_path):
    """Only `make server`'s marker (its URL and its live process) makes a running server ours."""
    import subprocess
    import sys

    from mlpipe.cli.local_server import local_api_to_reuse
    from mlpipe.cli.project_server import marker_path, project_server_api, write_marker

    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    monkeypatch.delenv(LOCAL_API_VARIABLE, raising=False)
    assert answering_prefect_api(health_server) and local_api_to_reuse() is None  # answers, but no marker
    write_marker(health_server)  # this process, alive
    assert local_api_to_reuse() == health_server and marker_path().parent == tmp_path / ".mlpipe"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_marker(health_server, pid=gone.pid)  # its server exited: the marker names no live process
    assert project_server_api() is None and local_api_to_reuse() is None
    monkeypatch.setenv(LOCAL_API_VARIABLE, health_server)  # named explicitly: reused
    assert local_api_to_reuse() == health_server
    monkeypatch.setenv(LOCAL_API_VARIABLE, "")
    assert local_api_to_reuse() is None


def test_make_server_marks_the_server_process_itself(tmp_path, monkeypatch):
    """`python -m mlpipe.cli.project_server` writes the marker, then becomes `prefect server start`:
    the marker names that process while it runs, and nothing once it is gone."""
    import json
    import subprocess
    import sys
    import time

    from mlpipe.cli.project_server import project_server_api

    port = free_port()
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    server = subprocess.Popen([sys.executable, "-m", "mlpipe.cli.project_server", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / ".mlpipe" / "prefect-server.json"
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        recorded = json.loads(marker.read_text())
        assert recorded["api_url"] == f"http://127.0.0.1:{port}/api"
        assert recorded["owner"].split("|")[1] == str(server.pid)
        assert project_server_api() == recorded["api_url"]
        os.killpg(server.pid, 9)
        server.wait()
        assert project_server_api() is None
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)
            server.wait()


# The local server mlpipe keeps between commands (mlpipe/cli/kept_server.py).

def test_the_lease_watch_stops_only_after_the_lease_was_free_for_the_idle_time(tmp_path):
    import fcntl
    import time

    from mlpipe.cli.kept_server import watch_lease

    lease = tmp_path / "lease"
    command = os.open(lease, os.O_RDWR | os.O_CREAT)
    fcntl.flock(command, fcntl.LOCK_SH)  # a command is running
    stopped = threading.Event()
    held = {}
    watcher = threading.Thread(target=lambda: held.setdefault("fd", watch_lease(str(lease), 0.5, stopped.set, 0.05)))
    watcher.start()
    time.sleep(1.0)
    assert not stopped.is_set()  # a command holds the lease, however long
    released = time.monotonic()
    os.close(command)
    watcher.join(timeout=10)
    assert stopped.is_set() and time.monotonic() - released >= 0.5 - 0.05  # idle, less one poll
    late = os.open(lease, os.O_RDWR)
    with pytest.raises(BlockingIOError):  # a command arriving now waits until the server is gone
        fcntl.flock(late, fcntl.LOCK_SH | fcntl.LOCK_NB)
    os.close(held["fd"])
    fcntl.flock(late, fcntl.LOCK_SH | fcntl.LOCK_NB)
    os.close(late)


def test_the_idle_setting_is_checked(monkeypatch):
    from mlpipe.cli.local_server import IDLE_VARIABLE, server_idle_seconds

    monkeypatch.setenv(IDLE_VARIABLE, "90")
    assert server_idle_seconds() == 90
    monkeypatch.setenv(IDLE_VARIABLE, "ten minutes")
    with pytest.raises(ValueError, match="MLPIPE_SERVER_IDLE_S"):
        server_idle_seconds()


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect")  # its database is created once, by the first server


@pytest.fixture
def own_prefect_home(prefect_home, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(prefect_home))
    monkeypatch.setenv(LOCAL_API_VARIABLE, "")  # never a developer's `make server`
    return prefect_home


def _exits(pid: int, within: float) -> bool:
    import time

    from mlpipe.cli.local_server import _pid_alive

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # over 10 s
def test_commands_share_the_kept_server_until_it_has_been_idle(own_prefect_home, monkeypatch):
    import subprocess
    import sys
    import time

    from mlpipe.cli.local_server import IDLE_VARIABLE, KeptPrefectServer

    monkeypatch.setenv(IDLE_VARIABLE, "2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-server")
    # Two commands starting at the same moment start one server between them.
    code = ("from mlpipe.cli.local_server import prefect_api\n"
            "with prefect_api() as server:\n    server.wait()\n    print(server.api_url, server.pid)\n")
    first, second = (subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                      cwd=own_prefect_home) for _ in range(2))
    outputs = {first.communicate(timeout=120)[0].strip(), second.communicate(timeout=120)[0].strip()}
    assert len(outputs) == 1, outputs
    url, pid = outputs.pop().split()
    assert answering_prefect_api(url)  # it outlived both commands
    environ = Path(f"/proc/{pid}/environ")
    if environ.exists():  # Linux: the long-lived server did not keep the commands' credentials
        assert b"not-for-the-server" not in environ.read_bytes()

    with prefect_api() as server:  # the next command reuses it and holds it past the idle time
        assert isinstance(server, KeptPrefectServer) and server.reused and server.api_url == url
        server.wait()
        assert os.environ["PREFECT_API_URL"] == url
        time.sleep(3)
        assert answering_prefect_api(url)
    assert "PREFECT_API_URL" not in os.environ
    assert _exits(int(pid), within=30), "the kept server did not exit after being idle"
    assert not answering_prefect_api(url)

    with prefect_api() as server:  # after it has gone, the next command starts a new one
        assert not server.reused and server.api_url != url
        server.wait()
    server.stop()
    assert server.process.poll() is not None and not answering_prefect_api(server.api_url)


def test_idle_zero_gives_a_server_for_one_command(own_prefect_home, monkeypatch):
    from mlpipe.cli.local_server import IDLE_VARIABLE, TemporaryPrefectServer

    monkeypatch.setenv(IDLE_VARIABLE, "0")
    with prefect_api() as server:
        assert isinstance(server, TemporaryPrefectServer)
        server.wait()
        url = server.api_url
        assert answering_prefect_api(url)
    assert server.process.poll() is not None and not answering_prefect_api(url)


@pytest.mark.parametrize("record, reused", [
    ("not json", False),
    ({"pid": 0, "api_url": "http://127.0.0.1:9/api", "started": 0}, False),  # kill(0) would probe our group
    ({"api_url": "http://127.0.0.1:9/api"}, False),
    ({"pid": "self", "api_url": "http://127.0.0.1:9/api", "started": 0}, False),  # alive, silent for long: stale
    ({"pid": "self", "api_url": "http://127.0.0.1:9/api", "started": "now"}, True),  # alive, still starting
])
def test_only_a_live_server_that_answers_or_is_starting_is_reused(tmp_path, record, reused):
    import json
    import time

    from mlpipe.cli.local_server import KeptPrefectServer

    server = KeptPrefectServer.__new__(KeptPrefectServer)  # just its record check
    server.state_path = tmp_path / "state.json"
    if isinstance(record, dict):
        record = json.dumps({**record, **({"pid": os.getpid()} if record.get("pid") == "self" else {}),
                             **({"started": time.time()} if record.get("started") == "now" else {})})
    server.state_path.write_text(record)
    assert (server._recorded() is not None) is reused


def test_commands_and_the_kept_server_import_with_the_garbage_collector_off_then_run_with_it_on():
    frozen = gc.get_freeze_count()
    try:
        with pytest.raises(RuntimeError), imports_without_gc():
            assert not gc.isenabled()
            raise RuntimeError("a config error ends the start-up early")
        assert gc.isenabled() and gc.get_freeze_count() > frozen  # what was imported is out of its reach

        class Node:
            pass

        node = Node()
        node.cycle = node
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None  # a cycle made after the start-up is still collected
    finally:
        gc.unfreeze()


def test_a_configured_api_is_unreachable_only_when_nothing_answers(monkeypatch):
    """Refused: unreachable. Any HTTP answer, an error status included (Prefect Cloud answers
    its health path only with a key): a server is there. Not configured: nothing to check."""
    import http.server
    import threading

    from mlpipe.cli.local_server import free_port, unreachable_prefect_api

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert unreachable_prefect_api() is None
    refused = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", refused)
    assert unreachable_prefect_api(timeout=2) == refused

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.server_port}/api")
        assert unreachable_prefect_api(timeout=2) is None
    finally:
        server.shutdown()
