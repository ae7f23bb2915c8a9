"""A real PostgreSQL for the tests, started by the tests themselves: the machine's own server
binaries (`initdb`, `pg_ctl`: PG_BIN, else `pg_config --bindir`, else the newest
/usr/lib/postgresql/*/bin, else on PATH) in a temporary folder, on a free port on 127.0.0.1,
with trust authentication and no durability (fsync off): a test database, gone at the end.

PostgreSQL refuses to run as root: as root, the server runs as `nobody`, owning its folder.
Where no binaries are found, `find_binaries` returns None and the tests that need it skip,
saying so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def find_binaries() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`, or None."""
    candidates = [os.environ.get("PG_BIN", "")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                         timeout=10).stdout.strip())
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates.append(str(Path(shutil.which("initdb") or "/nonexistent").parent))
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


class Postgres:
    """`start()` a server, `url(database)` for a client, `create_database(name)`, `stop()`."""

    def __init__(self, binaries: Path, port: int):
        self.binaries, self.port = binaries, port
        self.folder = Path(tempfile.mkdtemp(prefix="mlpipe-pg-", dir="/tmp"))  # short: the socket path
        self.data = self.folder / "data"
        self.user = "nobody" if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([str(self.binaries / args[0]), *args[1:]], capture_output=True, text=True,
                                timeout=timeout, user=self.user, cwd=self.folder)
        if result.returncode != 0:
            log = (self.folder / "server.log").read_text(errors="replace")[-3000:] if (
                self.folder / "server.log").exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-3000:]}\n{log}")

    def start(self) -> Postgres:
        os.chmod(self.folder, 0o755)
        if self.user:
            shutil.chown(self.folder, user=self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w",
                  "-t", "120", "start", timeout=150)
        return self

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        connection = psycopg.connect(self.url("postgres"), autocommit=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        for _ in range(50):
            if not (self.data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
