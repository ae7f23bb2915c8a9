"""Processes the tests start in a process group of their own, and end with that group: a local
Ray node (`ray stop` would stop every Ray on the machine, another test worker's too) or a
server whose children must go with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def stop_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM `process`'s group and reap it; SIGKILL the group if it has not exited within
    `timeout` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_ray_node(args: list[str], scratch: str, log_path: Path, timeout: float = 180.0) -> subprocess.Popen:
    """`ray start --block` on 127.0.0.1 with `args` (its files under `scratch`, its output in
    `log_path`), in a process group of its own, once its log says it started; stopped again
    (`stop_group`) when it does not start."""
    ray = str(Path(sys.executable).with_name("ray"))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAY_TMPDIR": scratch}, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
    except BaseException:
        stop_group(process, timeout=5)
        raise
    return process
