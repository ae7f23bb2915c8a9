"""deployments.local_server: which Prefect API a command uses when PREFECT_API_URL is not set."""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from deployments.local_server import (LOCAL_API_VARIABLE, answering_prefect_api, free_port, prefect_api)


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
