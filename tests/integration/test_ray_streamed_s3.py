"""compute.stream reading `s3://` (moto's S3 server, through the reader's s3fs wrapped for
Arrow): Ray Data's tasks read a Parquet and a CSV object in blocks, and every row lands on the
side of the split the local reader gives it. Its own module: the Ray it starts must see the
AWS environment the test sets (Ray's workers take the environment Ray started with)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_streamed_split_of_an_s3_object_matches_the_local_one(suffix, s3_env, tmp_path, generate_churn,
                                                              monkeypatch):
    from mlpipe.adapters import ray_cluster, ray_data
    from mlpipe.core.config import load_config
    from mlpipe.data.blocks import HOLDOUT, KEY
    from mlpipe.data.reader import read_dataset
    from mlpipe.data.splitting import split_validated
    from mlpipe.data.validation import validate_dataset
    from mlpipe.stages.streamed import read_streamed

    local_file = tmp_path / f"churn.{suffix}"
    frame = generate_churn(rows=3000, seed=4)
    frame.to_parquet(local_file) if suffix == "parquet" else frame.to_csv(local_file, index=False)
    s3_env.upload_file(str(local_file), "bucket", f"data/churn.{suffix}")
    uri = f"s3://bucket/data/churn.{suffix}"
    config = load_config(ROOT / "conf" / "churn.yaml",
                         ["compute.backend=ray", "compute.stream=true", "model.family=xgboost",
                          "model.params.xgboost.num_workers=2", "data.id_columns=[]"], uri)
    validated = validate_dataset(read_dataset(uri), config.data, config.min_class_rows())
    local = split_validated(validated, config.split)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_cluster.session(num_cpus=2):
        table = read_streamed(config)
        rows = ray_data.to_frame(table.rows)
    assert table.statistics.rows == len(frame) and table.statistics.tokens == validated.report.missing_tokens
    assert sorted(rows.loc[rows[HOLDOUT], KEY].tolist()) == sorted(local.holdout_keys.tolist())
    assert len(rows) == len(local.train) + len(local.holdout)
