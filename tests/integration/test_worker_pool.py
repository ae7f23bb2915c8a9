"""mlpipe.cli.worker against a real Prefect server: a work pool's concurrency limit is what its
flow runs get as MLPIPE_PARALLEL_RUNS (their share of the cores)."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from mlpipe.cli.worker import parallel_runs_of

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_pool_s_concurrency_limit_is_the_number_of_runs_sharing_the_machine():
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="limited-pool", type="process", concurrency_limit=3),
                                overwrite=True)
        client.create_work_pool(WorkPoolCreate(name="open-pool", type="process"), overwrite=True)
    assert parallel_runs_of("limited-pool") == 3
    assert parallel_runs_of("open-pool") is None
    assert parallel_runs_of("no-such-pool") is None
