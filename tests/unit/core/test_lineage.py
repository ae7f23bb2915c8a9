"""mlpipe.core.lineage: the lineage tags and key, the code version and source hash, URI redaction."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from mlpipe.core.lineage import LINEAGE_KEY, Lineage, code_version, redact_uri, source_hash
from mlpipe.core.paths import PACKAGE_ROOT

# -- redact_uri ---------------------------------------------------------------------------------


def test_redact_user_and_password():
    redacted = redact_uri("postgresql://user:pass@host:5432/db")
    assert redacted == "postgresql://***@host:5432/db"
    assert "user" not in redacted and "pass" not in redacted


def test_redact_user_without_password():
    assert redact_uri("postgresql://admin@db.internal/mlflow") == "postgresql://***@db.internal/mlflow"


@pytest.mark.parametrize(("uri", "secret"), [
    ("s3://bucket/churn.csv?X-Amz-Signature=abc123&X-Amz-Expires=60", "abc123"),
    ("https://bucket.s3.amazonaws.com/k.csv?X-Amz-Security-Token=tok987&X-Amz-Date=1", "tok987"),
    ("s3://b/k.csv?AWSAccessKeyId=AKIA&Signature=sig555&Expires=1", "sig555"),
    ("https://host/data.csv?access_key=AK1&secret_key=SK1", "SK1"),
    ("https://host/data.csv?password=pw42", "pw42"),
])
def test_redact_query_secrets(uri, secret):
    redacted = redact_uri(uri)
    assert secret not in redacted
    assert "***" in redacted
    assert redacted.split("?")[0] == uri.split("?")[0]


def test_redact_keeps_harmless_query_params():
    redacted = redact_uri("s3://bucket/churn.csv?X-Amz-Signature=abc&versionId=v7")
    assert "versionId=v7" in redacted


@pytest.mark.parametrize("uri", [
    "data/churn.csv",
    "/abs/path/churn.parquet",
    "file:///tmp/churn.csv",
    "s3://bucket/prefix/churn.csv",
    "http://mlflow.internal:5000",
    "sqlite:////tmp/mlflow.db",
])
def test_plain_uris_unchanged(uri):
    assert redact_uri(uri) == uri


def test_redact_userinfo_and_query_secret_together():
    redacted = redact_uri("postgresql://user:pass@host/db?sslpassword=hunter2")
    assert "hunter2" not in redacted


def test_redact_ipv6_host_stays_valid():
    assert redact_uri("http://user:pw@[::1]:5000/x") == "http://***@[::1]:5000/x"


# -- Lineage ----------------------------------------------------------------------------------

LINEAGE = Lineage(dataset_uri="postgresql://u:p@h/db", dataset_fingerprint="sha256:aa",
                  config_hash="c1", code_version="abc123", source_hash="s1", flow_run_id="run-1")


def test_lineage_key_is_stable():
    same = Lineage(**dataclasses.asdict(LINEAGE))
    assert LINEAGE.key == same.key
    assert len(LINEAGE.key) == 24


def test_lineage_key_changes_with_fingerprint_config_and_source():
    for field, value in [("dataset_fingerprint", "sha256:bb"), ("config_hash", "c2"), ("source_hash", "s2")]:
        assert dataclasses.replace(LINEAGE, **{field: value}).key != LINEAGE.key


def test_lineage_key_ignores_run_id_uri_and_commit():
    other = dataclasses.replace(LINEAGE, flow_run_id="run-2", dataset_uri="s3://b/k.csv", code_version="def")
    assert other.key == LINEAGE.key


def test_lineage_tags_redact_uri():
    tags = LINEAGE.tags()
    assert tags[LINEAGE_KEY] == LINEAGE.key
    assert tags["mlpipe.dataset_uri"] == "postgresql://***@h/db"
    assert all(key.startswith("mlpipe.") for key in tags)


# -- source_hash / code_version ---------------------------------------------------------------

def code_tree(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_source_hash_covers_subfolders_of_tasks(tmp_path):
    files = {"tasks/x.py": "A = 1\n", "tasks/adapter/y.py": "B = 1\n", "flows/f.py": "\n"}
    before = source_hash(code_tree(tmp_path / "a", files))
    after = source_hash(code_tree(tmp_path / "b", {**files, "tasks/adapter/y.py": "B = 2\n"}))
    assert after != before


def test_source_hash_names_files_by_path(tmp_path):
    flat = code_tree(tmp_path / "a", {"tasks/y.py": "B = 1\n", "flows/f.py": "\n"})
    nested = code_tree(tmp_path / "b", {"tasks/adapter/y.py": "B = 1\n", "flows/f.py": "\n"})
    assert source_hash(flat) != source_hash(nested)
    assert len(source_hash(flat)) == 16


def test_source_hash_ignores_other_files(tmp_path):
    a = code_tree(tmp_path / "a", {"tasks/x.py": "A = 1\n", "flows/f.py": "\n"})
    b = code_tree(tmp_path / "b", {"tasks/x.py": "A = 1\n", "tasks/notes.txt": "hi", "flows/f.py": "\n"})
    assert source_hash(a) == source_hash(b)


def test_code_version_outside_git_is_the_source_hash(tmp_path):
    root = code_tree(tmp_path, {"tasks/x.py": "A = 1\n", "flows/f.py": "\n"})
    assert code_version(root) == f"src-{source_hash(root)}"


def test_code_version_in_this_checkout_names_the_commit():
    commit = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    version = code_version()
    assert version == commit or version == f"{commit}-dirty-{source_hash()}"
