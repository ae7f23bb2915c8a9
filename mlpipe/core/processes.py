"""Which process owns something (a lock, an MLflow run, a Prefect flow run), and whether that
process is gone: the owner token `<host>:<pid namespace>|<pid>|<start time>` names one process
for as long as the machine runs. Its start time (from /proc) tells a reused PID from the owner.

Only an owner on this machine, in this PID namespace, can be found dead; anywhere else the
answer is "not known to be dead" and the thing is left alone.
"""

from __future__ import annotations

import os
import socket


def process_identity() -> str:
    """This machine and PID namespace: two processes with the same identity can check each
    other's PIDs (a container with its own PID namespace gets another identity)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or ""."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_token(pid: int | None = None) -> str:
    """The token of process `pid` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{process_identity()}|{pid}|{start_time(pid)}"


def pid_is_dead(identity: str, pid: str | int, started: str = "") -> bool:
    """True when the process ran here (same identity), and no process has that PID now, or the
    one that has it started at another time (the PID was reused)."""
    if identity != process_identity() or not str(pid).isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return bool(started) and start_time(int(pid)) not in ("", started)


def owner_is_dead(token: str) -> bool:
    """Whether the owner named by `token` (see `owner_token`) is known to be gone."""
    parts = token.split("|")
    return len(parts) == 3 and pid_is_dead(*parts)


def owner_is_alive(token: str) -> bool:
    """Whether the owner named by `token` is a process running here now: same machine, its PID
    taken, by a process that started when the owner did."""
    parts = token.split("|")
    if len(parts) != 3 or parts[0] != process_identity() or not parts[1].isdigit():
        return False
    started = start_time(int(parts[1]))
    return bool(started) and started == parts[2]
