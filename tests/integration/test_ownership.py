"""mlpipe.tasks.ownership on a real Prefect server: a flow run labelled with a process that is
gone is marked Crashed by the next flow's sweep; one of a live process is left Running."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlpipe.tasks.ownership import (
    OWNER_LABEL,
    OWNER_TAG_PREFIX,
    claim_flow_run,
    crash_runs_of_dead_processes,
    owned_by_this_process,
    run_owner,
)
from prefect import flow, tags, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Completed, Pending, Running

from mlpipe.core.processes import owner_token

pytestmark = pytest.mark.usefixtures("prefect_server")


@flow(name="ownership-probe")
def probe() -> None:
    """Never run: its flow runs are made directly in the states a test needs."""


def test_running_flow_runs_of_a_killed_process_are_marked_crashed():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(probe, state=Running())
        alive = client.create_flow_run(probe, state=Running())
        client.update_flow_run_labels(dead.id, {OWNER_LABEL: owner_token(child.pid)})
        client.update_flow_run_labels(alive.id, {OWNER_LABEL: owner_token()})
        assert str(dead.id) in crash_runs_of_dead_processes(client)
        assert client.read_flow_run(dead.id).state.name == "Crashed"
        assert client.read_flow_run(alive.id).state.is_running()
        assert str(dead.id) not in crash_runs_of_dead_processes(client)
        client.set_flow_run_state(alive.id, Completed(), force=True)


def test_a_run_created_by_a_process_now_gone_is_found_by_its_tag_before_any_label():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with get_client(sync_client=True) as client:
        pending = client.create_flow_run(probe, state=Pending(), tags=[OWNER_TAG_PREFIX + owner_token(child.pid)])
        assert str(pending.id) in crash_runs_of_dead_processes(client)
        assert client.read_flow_run(pending.id).state.name == "Crashed"


def test_the_command_tags_the_flow_runs_it_creates():
    with owned_by_this_process():
        state = probe(return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run_owner(run) == owner_token()


@task(name="ownership-step")
def _step() -> int:
    return 1


@flow(name="ownership-claim")
def _claiming() -> int:
    claim_flow_run(sweep_tracking=False)
    return _step() + _step()


def test_the_flow_run_keeps_its_owner_tag_and_its_task_runs_go_without_it():
    """Prefect takes each task run tag for a concurrency limit's name and asks the server for a
    slot: the owner tag stays on the flow run only (the user's own tags reach the tasks)."""
    with tags("nightly"), owned_by_this_process():
        state = _claiming(return_state=True)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        steps = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert run_owner(run) == owner_token() and OWNER_TAG_PREFIX + owner_token() in run.tags
    assert len(steps) == 2 and all(set(step.tags) == {"nightly"} for step in steps), [s.tags for s in steps]
