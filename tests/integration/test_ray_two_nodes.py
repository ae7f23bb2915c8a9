"""The out-of-core proof (issue 29): two Ray nodes on this machine (`ray start --head`, and a
second `ray start --address` joining it), each with one CPU, a small object store and memory,
train a booster over a Parquet table several times larger than one node's object store. The
driver (its own process, tests/integration/streamed_driver.py; its peak is its VmHWM) peaks
below the table's size in memory, and the holdout roc_auc is within 0.005 of the local fit on the same rows.

Scale: the driver's floor is about 330 MB (pandas, scikit-learn, Ray and XGBoost imported) and
it peaks near 440 MB, so the table must be larger than that to prove anything. Numbers alone
would take 6M rows (minutes on 2 cores); here a free-text column that every pass reads but the
model drops (data.drop_columns) makes up about 80% of the table's 766 MB, the ten features and
the target the rest (1.5M rows)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.processes import start_ray_node, stop_group

pytestmark = pytest.mark.slow
OBJECT_STORE = 80 * 1024**2  # per node (Ray's minimum is about 75 MB)
NODE = ["--num-cpus", "1", "--memory", str(2 * 1024**3), "--object-store-memory", str(OBJECT_STORE)]

ROWS = 1_500_000
DRIVER = Path(__file__).with_name("streamed_driver.py")


@pytest.fixture
def two_ray_nodes():
    """A head node and a second node joining it, on 127.0.0.1; yields the address. Both are
    stopped at teardown, also when the test failed, and their files removed."""
    scratch = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = []
    try:
        started.append(start_ray_node([*NODE, "--head", "--port", str(port), "--include-dashboard", "false",
                                       "--temp-dir", scratch], scratch, Path(scratch) / "head.log"))
        started.append(start_ray_node([*NODE, "--address", f"127.0.0.1:{port}"], scratch, Path(scratch) / "node.log"))
        yield f"127.0.0.1:{port}"
    finally:
        for process in reversed(started):
            stop_group(process, timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


def _write_table(path: Path, rows: int) -> int:
    """A churn-like table written in chunks (this process never holds it either): an ID, ten
    numeric features, a free-text note the model does not use (data.drop_columns, as exports
    carry them) and a 0/1 target. Returns its size in memory as the project's reader reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(29)
    notes = np.array([" ".join(rng.choice(["call", "billing", "upgrade", "outage", "refund", "moved", "price",
                                           "support", "cancel", "offer"], 60)) for _ in range(500)], dtype=object)
    writer, size = None, 0
    for start in range(0, rows, 250_000):
        n = min(250_000, rows - start)
        x = rng.normal(size=(n, 10))
        chunk = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
        chunk.insert(0, "row_id", np.arange(start, start + n))
        chunk["note"] = pd.array(notes[rng.integers(0, len(notes), n)], dtype="str")
        chunk["y"] = (x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] + rng.normal(0, 1, n) > 0).astype("int64")
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=125_000)
        size += int(chunk.memory_usage(deep=True).sum())
    writer.close()
    return size


def _config(path: Path):
    from mlpipe.core.config import PipelineConfig

    return PipelineConfig.model_validate({
        "data": {"uri": str(path), "target": "y", "positive_label": None, "id_columns": ["row_id"],
                 "drop_columns": ["note"]},
        "model": {"family": "xgboost", "params": {"xgboost": {
            "num_workers": 2, "n_jobs": 1, "n_estimators": 60, "max_depth": 4, "learning_rate": 0.2}}},
        "compute": {"backend": "ray", "stream": True, "ray_worker_cpus": 0.5, "ray_data_cpus": 0.5,
                    "stream_sample_rows": 20_000}})


def _local_auc(config) -> tuple[float, int]:
    """The local path on the same file: read whole, validate, split, fit in this process."""
    from sklearn.metrics import roc_auc_score

    from mlpipe.data.reader import read_dataset
    from mlpipe.data.splitting import split_validated
    from mlpipe.data.validation import validate_dataset
    from mlpipe.model.features import build_preprocessor, feature_spec
    from mlpipe.stages.training import fit_model

    validated = validate_dataset(read_dataset(config.data.uri), config.data, config.min_class_rows())
    split, report = split_validated(validated, config.split), validated.report
    del validated
    model_config = config.model.model_copy(update={"params": {"xgboost": {
        **config.model.params["xgboost"], "num_workers": 0, "n_jobs": 2}}})
    spec = feature_spec(report.numeric_features, report.categorical_features, config.features,
                        list(config.data.na_values))
    model = fit_model(split.train, "y", spec, build_preprocessor(spec, config.features), model_config)
    proba = model.predict_proba(split.holdout[spec.columns])[:, 1]
    return float(roc_auc_score(split.holdout["y"], proba)), len(split.holdout)


def test_two_nodes_train_on_a_table_no_node_and_not_the_driver_holds(two_ray_nodes, tmp_path):
    path = tmp_path / "table.parquet"
    table_bytes = _write_table(path, ROWS)
    assert table_bytes > 6 * OBJECT_STORE  # several times a node's object store (both nodes' together, too)
    config = _config(path)
    done = subprocess.run([sys.executable, str(DRIVER), config.model_dump_json()], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "RAY_ADDRESS": two_ray_nodes, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    streamed = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"table {table_bytes / 1e6:.0f} MB in memory; streamed driver peak {streamed['peak_rss'] / 1e6:.0f} MB, "
          f"{streamed['seconds']:.0f} s; roc_auc {streamed['roc_auc']:.4f}")
    assert streamed["nodes"] == 2
    assert streamed["peak_rss"] < table_bytes, (streamed["peak_rss"], table_bytes)
    auc_local, holdout_rows = _local_auc(config)
    print(f"local roc_auc {auc_local:.4f}")
    assert streamed["holdout_rows"] == holdout_rows  # the same holdout, every row of it scored
    assert abs(streamed["roc_auc"] - auc_local) < 0.005, (streamed["roc_auc"], auc_local)
