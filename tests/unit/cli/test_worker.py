"""mlpipe.cli.worker: a worker whose Prefect server has gone is stopped within a bounded time,
even one that ignores SIGTERM, and says why in one line."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time

from mlpipe.cli.local_server import free_port

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


def watched(api_url: str) -> subprocess.Popen:
    code = (f"import sys; from mlpipe.cli.worker import watch; "
            f"sys.exit(watch([sys.executable, '-c', {STUBBORN!r}], {api_url!r}, grace_s=1.0, poll_s=0.2, stop_s=1.0))")
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def test_a_worker_whose_server_is_gone_is_stopped_and_says_so():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}/api"
    worker = watched(api_url)
    time.sleep(2.0)
    assert worker.poll() is None  # the server answers: the worker runs on
    server.shutdown()
    server.server_close()
    gone = time.monotonic()
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 1 and time.monotonic() - gone < 10  # grace 1 s, poll 0.2 s, SIGKILL after 1 s
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot reach the Prefect API at {api_url}: no answer for 1 s")
    assert len(lines) == 2 and "waiting up to 1 s" in lines[0]


def test_a_worker_never_reaching_its_server_stops_too():
    worker = watched(f"http://127.0.0.1:{free_port()}/api")
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 1 and "worker stopped" in stderr
