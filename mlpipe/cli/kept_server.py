"""The local Prefect server `mlpipe` commands share when no PREFECT_API_URL is set.

    python -P -m mlpipe.cli.kept_server --port P --lease FILE --idle SECONDS
    python -P -m mlpipe.cli.kept_server --port P      (no lease: until stopped, for one command)

Started detached by the first command (mlpipe/cli/local_server.py). It serves Prefect's API in
ephemeral mode (no UI, no background services), like the server Prefect would start for one
process, and exits by itself once no command has held its lease for `--idle` seconds. Each
command holds a shared `flock` on the lease file for its whole length, so a long run that makes
no API call for an hour still keeps the server up; the lock dies with the command, also when
the command is killed. Before exiting, the server takes the lease exclusively and keeps it until
the process is gone: a command that arrives meanwhile waits for that, then starts a new server.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import threading
import time


def watch_lease(lease_path: str, idle_s: float, stop, poll_s: float = 1.0) -> int:
    """Block until no command has held the lease for `idle_s` seconds, then call `stop()` and
    return the file descriptor that now holds the lease exclusively (keep it open until exit)."""
    fd = os.open(lease_path, os.O_RDWR | os.O_CREAT, 0o600)
    last_held = time.monotonic()
    while True:
        time.sleep(poll_s)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a command holds it
            last_held = time.monotonic()
            continue
        if time.monotonic() - last_held >= idle_s:
            stop()
            return fd
        fcntl.flock(fd, fcntl.LOCK_UN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lease", help="file the commands using this server lock (shared); without it, the "
                                        "server runs until it is stopped (a one-command server)")
    parser.add_argument("--idle", type=float, default=600.0, help="seconds without a command before exiting")
    args = parser.parse_args()

    import uvicorn

    from mlpipe.cli.local_server import imports_without_gc

    with imports_without_gc():  # Prefect's server modules and its app: most of the start
        from prefect.server.api.server import create_app

        app = create_app()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="error", lifespan="on"))

    def stop() -> None:
        server.should_exit = True

    if args.lease:
        threading.Thread(target=watch_lease, args=(args.lease, args.idle, stop), daemon=True,
                         name="lease-watch").start()
    server.run()


if __name__ == "__main__":
    main()
