"""mlpipe.tasks.data: the data stage's tasks (resolve, fingerprint, load, split) called as functions."""

from __future__ import annotations

import pandas as pd
import pytest
from prefect.logging import disable_run_logger

from mlpipe.core.config import CsvConfig, DataConfig, SplitConfig
from mlpipe.core.errors import DatasetError
from mlpipe.data.validation import validate_dataset
from mlpipe.tasks.caching import key_inputs
from mlpipe.tasks.data import fingerprint_task, load_task, resolve_data_task, split_task


def _rows(n: int = 200) -> str:
    return "id;score;y\n" + "".join(f"{i};{i % 7},5;{i % 2}\n" for i in range(n))


def test_load_reads_what_was_fingerprinted_with_the_configured_dialect(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(_rows())
    fingerprint = fingerprint_task.fn(data=DataConfig(uri=str(path)))
    assert fingerprint.value.startswith("sha256:") and fingerprint.uri == str(path)
    with disable_run_logger():
        frame = load_task.fn(fingerprint=fingerprint, fmt="auto", csv=CsvConfig(decimal=","))
    assert list(frame.columns) == ["id", "score", "y"] and frame["score"].iloc[1] == 1.5


def test_load_is_keyed_on_the_fingerprint_and_the_read_options_only():
    assert key_inputs(load_task) == ("fingerprint", "fmt", "csv")


def test_fingerprint_of_a_missing_dataset_fails_without_retrying(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        fingerprint_task.fn(data=DataConfig(uri=str(tmp_path / "missing.csv")))


def test_resolve_keeps_a_file_and_picks_the_newest_under_a_prefix(tmp_path):
    (tmp_path / "2026-01.csv").write_text("a\n1\n")
    plain = DataConfig(uri=str(tmp_path / "2026-01.csv"))
    assert resolve_data_task.fn(data=plain).data == plain
    with disable_run_logger():
        source = resolve_data_task.fn(data=DataConfig(uri=str(tmp_path) + "/"))
    assert source.data.uri == str(tmp_path / "2026-01.csv") and source.superseded == ()


def test_split_keeps_the_row_keys_and_the_parameters():
    frame = pd.DataFrame({"x": [i % 13 + 0.5 for i in range(400)], "plan": [("a", "b", "c")[i % 3] for i in range(400)],
                          "y": [i % 2 for i in range(400)]})
    validated = validate_dataset(frame, DataConfig(target="y", positive_label=None, min_rows=2))
    split = split_task.fn(validated=validated, split=SplitConfig(holdout_fraction=0.25, seed=3))
    assert len(split.train) + len(split.holdout) == 400 and 60 < len(split.holdout) < 140
    assert len(split.holdout_keys) == len(split.holdout)
    assert (split.params.method, split.params.seed, split.params.holdout_fraction) == ("hash", 3, 0.25)
