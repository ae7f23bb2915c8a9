"""`make server`: this project's Prefect server (with its UI), and the marker that lets the
project's commands find it: `<project home>/.mlpipe/prefect-server.json`, holding its API URL
and its process's owner token (mlpipe/core/processes.py). A command without PREFECT_API_URL
uses a running Prefect server only when the marker names it, its process is still the one that
wrote it, and it answers: never whatever happens to answer on a well-known port (another
checkout's server, on a shared machine).

    python -m mlpipe.cli.project_server [--host 127.0.0.1] [--port 4200]

The marker is written, then this process becomes `prefect server start` (exec: the same PID and
start time), so the marker names the server itself; once it exits, the marker names no live
process and is ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlpipe.core.paths import project_home
from mlpipe.core.processes import owner_is_alive, owner_token


def marker_path() -> Path:
    return project_home() / ".mlpipe" / "prefect-server.json"


def write_marker(api_url: str, pid: int | None = None) -> Path:
    """Record `api_url` as this project's server, run by process `pid` (this one by default)."""
    path = marker_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"api_url": api_url, "owner": owner_token(pid)}))
    temporary.replace(path)
    return path


def project_server_api() -> str | None:
    """The API URL of this project's `make server` when its marker names a live process, else None
    (whether it answers is the caller's check)."""
    try:
        recorded = json.loads(marker_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or not owner_is_alive(str(recorded.get("owner", ""))):
        return None
    return str(recorded.get("api_url") or "") or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="This project's Prefect server, with its UI.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    options = parser.parse_args(argv)
    reach = "127.0.0.1" if options.host in ("0.0.0.0", "") else options.host  # where this machine reaches it
    path = write_marker(f"http://{reach}:{options.port}/api")
    print(f"mlpipe: this project's commands use this server ({path})", file=sys.stderr, flush=True)
    prefect = str(Path(sys.executable).with_name("prefect"))
    os.execv(prefect, [prefect, "server", "start", "--host", options.host, "--port", str(options.port)])


if __name__ == "__main__":
    main()
