"""Flow runs of a killed process: each mlpipe flow run is labelled with its process (the owner
token of mlpipe/core/processes.py) as it starts (and a run the `mlpipe` command starts carries
it as a tag from its creation, `owned_by_this_process`), and marks Crashed the runs that processes on
this machine left Running when they died, and ends the MLflow runs they left RUNNING. A
SIGKILLed `mlpipe train` reports nothing; the next flow on this machine settles what it left.
The server mlpipe keeps locally runs no services, so Prefect's own heartbeat-based zombie
detection (an automation on missing heartbeats) would never fire there.
"""

from __future__ import annotations

import logging

from mlpipe.core.processes import owner_is_dead, owner_token

OWNER_LABEL = "mlpipe.owner"
OWNER_TAG_PREFIX = "mlpipe-owner:"
logger = logging.getLogger(__name__)


def owned_by_this_process():
    """A context in which the flow runs this process creates are tagged with its owner token
    from their creation: a run killed before its first line ran is still known as ours."""
    from prefect import tags

    return tags(OWNER_TAG_PREFIX + owner_token())


def run_owner(run) -> str:
    """The owner token of a flow run: its label, else its owner tag, else ""."""
    tagged = [tag.removeprefix(OWNER_TAG_PREFIX) for tag in run.tags or [] if tag.startswith(OWNER_TAG_PREFIX)]
    return str((run.labels or {}).get(OWNER_LABEL, "")) or (tagged[0] if tagged else "")


def crash_runs_of_dead_processes(client) -> list[str]:
    """Mark Crashed every Running or Pending flow run whose owner (label or tag) is a process
    on this machine that is gone; returns their ids. `client`: a sync Prefect client."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.RUNNING, StateType.PENDING])))
    crashed, runs, offset = [], [], 0
    while page := client.read_flow_runs(flow_run_filter=running, limit=200, offset=offset):  # the API's most
        runs += page
        offset += len(page)
    for run in runs:
        token = run_owner(run)
        if token and owner_is_dead(token):
            client.set_flow_run_state(run.id, Crashed(message="its mlpipe process was killed (found by a later run)"),
                                      force=True)
            crashed.append(str(run.id))
    return crashed


def untag_task_runs() -> None:
    """The owner tag is for the flow run, from its creation until it is labelled: take it out of
    the tags the rest of this flow's task runs are created with. Prefect reads every task run tag
    as the name of a tag concurrency limit and asks the server for a slot of it (two more calls a
    task), and the local server now and then answered that call 503, which the client retried
    after 2 s: sample-7k's train took 2-3 s longer in 2 runs of 3."""
    from prefect.context import TagsContext

    current = TagsContext.get().current_tags
    kept = {tag for tag in current if not tag.startswith(OWNER_TAG_PREFIX)}
    if kept != current:  # set for the rest of the flow's body; the command's `tags` block restores it
        TagsContext.__var__.set(TagsContext(current_tags=kept))


def claim_flow_run(*, sweep_tracking: bool = True) -> None:
    """Call first in a flow: label this flow run with its process (its task runs then go
    untagged, `untag_task_runs`), then settle what dead processes left (flow runs; with
    `sweep_tracking`, MLflow runs too). Never fails the flow: a server that refuses is logged
    and the run goes on."""
    from prefect import runtime
    from prefect.client.orchestration import get_client

    untag_task_runs()
    try:
        with get_client(sync_client=True) as client:
            if runtime.flow_run.id:
                client.update_flow_run_labels(runtime.flow_run.id, {OWNER_LABEL: owner_token()})
            if crashed := crash_runs_of_dead_processes(client):
                logger.warning("marked %d flow run(s) of killed processes Crashed: %s", len(crashed), crashed)
        if sweep_tracking:
            from mlpipe.adapters.mlflow.tracking import mark_runs_of_dead_processes

            if orphaned := mark_runs_of_dead_processes():
                logger.warning("marked %d MLflow run(s) of killed processes orphaned: %s", len(orphaned), orphaned)
    except Exception as error:  # noqa: BLE001 - housekeeping: the run itself must go on
        logger.warning("could not settle the runs of killed processes: %s: %s", type(error).__name__, error)
