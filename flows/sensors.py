"""The `new-data-sensor` flow: find new dataset objects under a prefix and announce them."""

from __future__ import annotations

from mlpipe.tasks.events import emit_arrivals, find_new_objects, remember_objects
from mlpipe.tasks.ownership import claim_flow_run
from prefect import flow


@flow(name="new-data-sensor", log_prints=True)
def new_data_sensor(prefix: str = "data/incoming/", patterns: list[str] = ["*.csv", "*.parquet"]) -> list[str]:  # noqa: B006
    """List `prefix` (a local folder or s3:// prefix) and emit one `mlpipe.dataset.arrived`
    event per object not seen before (by URI + ETag or content hash). What was seen is kept
    in a Prefect Variable on the server, so the same object emits once across runs.

    Args:
        prefix: The folder or s3:// prefix watched for new dataset objects.
        patterns: The file name patterns that count as datasets.
    """
    claim_flow_run(sweep_tracking=False)  # label this run with its process; crash what killed processes left
    arrived = find_new_objects(prefix=prefix, patterns=patterns)
    emit_arrivals(prefix=prefix, arrived=arrived)
    remember_objects(prefix=prefix, arrived=arrived)
    return [item.uri for item in arrived]
