"""mlpipe.core.processes: owner tokens, and telling a dead owner from a live, reused or remote one."""

from __future__ import annotations

import os
import subprocess
import sys

from mlpipe.core.processes import owner_is_dead, owner_token, pid_is_dead, process_identity, start_time


def finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_token_names_this_process_and_when_it_started():
    identity, pid, started = owner_token().split("|")
    assert identity == process_identity() and pid == str(os.getpid())
    assert started == start_time(os.getpid()) and started.isdigit()


def test_only_a_gone_process_of_this_machine_is_dead():
    gone = finished_pid()
    assert owner_is_dead(f"{process_identity()}|{gone}|")
    assert not owner_is_dead(owner_token())
    assert not owner_is_dead(f"elsewhere:1|{gone}|")  # another machine: not ours to judge
    assert not owner_is_dead("") and not owner_is_dead("garbage") and not pid_is_dead(process_identity(), "0")


def test_a_reused_pid_is_told_apart_by_its_start_time():
    here = process_identity()
    assert pid_is_dead(here, os.getpid(), started="1")  # this PID, but a process that started at tick 1
    assert not pid_is_dead(here, os.getpid(), started=start_time(os.getpid()))
