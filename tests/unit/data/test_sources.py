"""mlpipe.data.sources: a prefix of snapshots (the newest is trained on) and new objects under it."""

from __future__ import annotations

import os

import pytest

from mlpipe.core.config import DataConfig
from mlpipe.core.errors import DatasetError
from mlpipe.data.sources import list_datasets, new_objects, resolve_data_source


def test_prefix_resolves_to_the_newest_object_and_names_the_rest(tmp_path):
    for name, mtime in (("2026-01.csv", 100), ("2026-03.csv", 300), ("2026-02.parquet", 200), ("notes.txt", 999)):
        (tmp_path / name).write_text("a,b\n1,2\n")
        os.utime(tmp_path / name, (mtime, mtime))
    prefix = str(tmp_path) + "/"
    source = resolve_data_source(DataConfig(uri=prefix))
    assert source.data.uri == str(tmp_path / "2026-03.csv") and source.prefix == prefix
    assert source.superseded == (str(tmp_path / "2026-02.parquet"), str(tmp_path / "2026-01.csv"))
    assert source.tags() == {"mlpipe.dataset_prefix": prefix,
                             "mlpipe.dataset_superseded": "2026-02.parquet, 2026-01.csv"}
    os.utime(tmp_path / "2026-01.csv", (300, 300))  # same time: the later name wins
    assert resolve_data_source(DataConfig(uri=prefix)).data.uri == str(tmp_path / "2026-03.csv")

    plain = DataConfig(uri=str(tmp_path / "2026-01.csv"))
    assert resolve_data_source(plain).data == plain and resolve_data_source(plain).tags() == {}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset objects"):
        resolve_data_source(DataConfig(uri=str(tmp_path / "empty") + "/"))


def test_list_datasets_finds_matching_files_directly_under_the_prefix(tmp_path):
    (tmp_path / "a.csv").write_text("a,b\n1,2\n")
    (tmp_path / "b.parquet").write_bytes(b"not really parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.csv").write_text("a\n1\n")  # not directly under the prefix
    listed = list_datasets(str(tmp_path) + "/")
    assert sorted(listed) == [str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")]
    fingerprint, size = listed[str(tmp_path / "a.csv")]
    assert fingerprint.startswith("sha256:") and size == len("a,b\n1,2\n")
    assert list_datasets(str(tmp_path / "missing") + "/") == {}


def test_new_objects_are_unseen_or_rewritten_in_place():
    listed = {"s3://b/p/1.csv": ("etag:a", 10), "s3://b/p/2.csv": ("etag:b", 20), "s3://b/p/3.csv": ("etag:c", 30)}
    seen = {"s3://b/p/1.csv": "etag:a", "s3://b/p/2.csv": "etag:old"}
    assert new_objects(listed, seen) == [("s3://b/p/2.csv", "etag:b", 20), ("s3://b/p/3.csv", "etag:c", 30)]
    assert new_objects(listed, {uri: fp for uri, (fp, _) in listed.items()}) == []
