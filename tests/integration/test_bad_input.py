"""The bad-input matrix: broken data and configs stop in validation or config loading with a
message naming the column or key, and never touch the registry; the documented handled cases
train with a warning."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlpipe.core.config import ConfigError
from mlpipe.core.errors import DatasetError
from mlpipe.data.validation import DataValidationError
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")
MODEL = "churn-classifier"


@pytest.fixture(scope="module")
def registry_with_champion(tmp_path_factory, small_churn_csv, new_mlflow_store):
    """One project home for the module, with a champion trained on good data first."""
    import mlflow

    from mlpipe.core.config import load_config

    home = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch:
        uri = new_mlflow_store(home / "mlflow.db")
        patch.setenv("MLPIPE_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(home)
        mlflow.set_tracking_uri(uri)
        config = load_config(Path(__file__).parents[2] / "conf" / "churn.yaml",
                             ["evaluation.cv_folds=3", "evaluation.permutation_repeats=1",
                              "model.family=logistic_regression"], str(small_churn_csv))
        summary = train(config=config)
        assert summary.decision.alias == "champion"
        yield home
        mlflow.set_tracking_uri(None)


def base() -> pd.DataFrame:
    return _frame.copy()


_frame: pd.DataFrame


@pytest.fixture(scope="module", autouse=True)
def _base_frame(small_churn_csv):
    global _frame
    _frame = pd.read_csv(small_churn_csv)


def csv(tmp: Path, frame: pd.DataFrame, name="data.csv", **kwargs) -> Path:
    path = tmp / name
    frame.to_csv(path, index=False, **kwargs)
    return path


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def write(tmp: Path, name: str, payload: bytes) -> Path:
    path = tmp / name
    path.write_bytes(payload)
    return path


def with_column(**columns):
    def build(tmp):
        frame = base()
        for name, make in columns.items():
            frame[name] = make(frame)
        return csv(tmp, frame), []
    return build


def flipped(frame: pd.DataFrame, share: float) -> np.ndarray:
    y = (frame["churn"] == "Yes").astype(int).to_numpy()
    flip = np.random.default_rng(0).random(len(y)) < share
    return np.where(flip, 1 - y, y)


# name -> (build(tmp) -> (data path, overrides), expected error type, text the message must contain)
REFUSED = {
    "empty file": (lambda t: (write(t, "e.csv", b""), []), DataValidationError, "empty"),
    "header only": (lambda t: (write(t, "h.csv", ",".join(base().columns).encode() + b"\n"), []),
                    DataValidationError, "empty (no rows)"),
    "non-utf8 bytes": (lambda t: (write(t, "l.csv", base().to_csv(index=False).replace("Female", "Fémale")
                                        .encode("latin-1")), []), DatasetError, "not UTF-8"),
    # detected when left on auto (tests/integration/test_dirty_export.py); a wrong setting is refused
    "wrong delimiter configured": (lambda t: (csv(t, base(), sep=";"), ["data.csv.delimiter=,"]), DataValidationError,
                                   "the file looks semicolon-delimited; set data.csv.delimiter to ';'"),
    "corrupt parquet": (lambda t: (write(t, "c.parquet", b"PAR1" + bytes(range(256)) * 8), []), DatasetError,
                        "not a readable Parquet"),
    "truncated parquet": (lambda t: (write(t, "t.parquet", parquet_bytes(base())[:5000]), []), DatasetError,
                          "not a readable Parquet"),
    "uri does not exist": (lambda t: (t / "nope" / "missing.csv", []), DatasetError, "does not exist"),
    "missing target": (lambda t: (csv(t, base().drop(columns=["churn"])), []), DataValidationError,
                       "target column 'churn' is missing"),
    "single-class target": (lambda t: (csv(t, base().assign(churn="No")), []), DataValidationError, "single class"),
    "target with nan": (lambda t: (csv(t, base().assign(churn=base()["churn"].where(base().index % 97 != 0))), []),
                        DataValidationError, "unlabeled: missing x"),
    "unknown positive label": (lambda t: (csv(t, base()), ["data.positive_label=Churned"]), DataValidationError,
                               "never takes the positive label 'Churned'"),
    "unparseable target labels": (lambda t: (csv(t, base().assign(churn=base()["churn"].where(
        base().index % 50 != 0, "maybe"))), []), DataValidationError, "unlabeled: 'maybe' x"),
    "feature all null": (with_column(support_calls=lambda f: np.nan), DataValidationError, "'support_calls' is entirely empty"),
    "duplicate column names": (lambda t: (write(t, "d.csv", base().to_csv(index=False).replace(
        "gender,", "partner,", 1).encode()), []), DatasetError, "duplicate column names ['partner']"),
    "mixed types in one column": (with_column(monthly_charges=lambda f: f["monthly_charges"].astype(str).where(
        f.index % 40 != 0, "unknown")), DataValidationError, "'monthly_charges' mixes numbers and text"),
    "column identical to target": (with_column(churn_flag=lambda f: (f["churn"] == "Yes").astype(int)),
                                   DataValidationError, "'churn_flag' predicts target 'churn' almost perfectly"),
    "column near-identical to target": (with_column(cancel_code=lambda f: np.where(flipped(f, 0.002), "C", "A")),
                                        DataValidationError, "'cancel_code' predicts target"),
    "fewer rows than folds": (lambda t: (csv(t, pd.concat([base()[base()["churn"] == "No"].head(40),
                                                           base()[base()["churn"] == "Yes"].head(3)])),
                                         ["data.min_rows=10"]), DataValidationError, "the rarer class has 3 rows"),
    "fewer rows than min_rows": (lambda t: (csv(t, base().head(150)), []), DataValidationError,
                                 "fewer than data.min_rows=200"),
    "required feature missing": (lambda t: (csv(t, base().drop(columns=["tenure"])), []), DataValidationError,
                                 "required feature 'tenure'"),
    "derived feature on a text column": (lambda t: (csv(t, base()), [
        "features.ratios=[{name: r, numerator: contract, denominator: tenure}]"]), DataValidationError,
        "needs numeric column 'contract'"),
}

CONFIG_REFUSED = {
    "config key that does not exist": (["modle.family=random_forest"], "modle: unknown key"),
    "nested key that does not exist": (["model.familly=random_forest"], "model.familly: unknown key"),
    "value of the wrong type": (["split.holdout_fraction=lots"], "split.holdout_fraction"),
    "value out of range": (["evaluation.cv_folds=1"], "evaluation.cv_folds"),
    "unknown model family": (["model.family=catboost"], "model.family"),
    "unknown model parameter": (["model.params.random_forest.depth=3"], "model.params.random_forest.depth"),
    "search space with low > high": (["tuning.spaces.random_forest.max_depth={type: int, low: 9, high: 2}"],
                                     "low (9.0) must be below high (2.0)"),
}

HANDLED = {
    "constant feature": (with_column(region=lambda f: "EU"), "'region' has a single value"),
    "+/-inf values": (with_column(monthly_charges=lambda f: f["monthly_charges"].where(
        f.index % 100 != 0, np.inf).where(f.index % 101 != 0, -np.inf)), "infinite values: treated as missing"),
    "id column unique per row": (with_column(account_ref=lambda f: [f"A-{i:07d}" for i in range(len(f))]),
                                 "'account_ref' is unique per row and looks like an ID"),
    "very high cardinality categorical": (with_column(city=lambda f: [f"city-{i % 700}" for i in range(len(f))]),
                                          None),
}


def registry_state():
    client = MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    return versions, str(client.get_model_version_by_alias(MODEL, "champion").version)


def config_for(data: Path, overrides: list[str]):
    from mlpipe.core.config import load_config

    return load_config(Path(__file__).parents[2] / "conf" / "churn.yaml",
                       ["evaluation.cv_folds=3", "evaluation.permutation_repeats=1",
                        "model.family=logistic_regression", *overrides], str(data))


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_data_fails_in_validation_and_registers_nothing(case, registry_with_champion, tmp_path):
    build, error_type, text = REFUSED[case]
    data, overrides = build(tmp_path)
    before = registry_state()

    state = train(config=config_for(data, overrides), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, error_type), repr(error)
    assert text in str(error), str(error)
    assert registry_state() == before


@pytest.mark.parametrize("case", sorted(CONFIG_REFUSED))
def test_refused_config_fails_at_load_naming_the_key(case, small_churn_csv):
    overrides, text = CONFIG_REFUSED[case]
    with pytest.raises(ConfigError) as raised:
        config_for(small_churn_csv, overrides)
    assert text in str(raised.value)


@pytest.mark.parametrize("case", sorted(HANDLED))
def test_handled_cases_train_with_a_warning(case, registry_with_champion, tmp_path):
    build, warning = HANDLED[case]
    data, overrides = build(tmp_path)
    summary = train(config=config_for(data, overrides))
    assert summary.metrics["roc_auc"] > 0.75
    if warning:
        assert any(warning in w for w in summary.warnings), summary.warnings


@pytest.fixture
def s3_denying_access(monkeypatch):
    """An S3 endpoint that answers every request as S3 does without access: 403 AccessDenied."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>")

    class Deny(BaseHTTPRequestHandler):
        def _deny(self):
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = _deny

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "no-access")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "no-access")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


def test_s3_bucket_without_access_fails_at_once_naming_the_uri(registry_with_champion, s3_denying_access):
    before = registry_state()
    state = train(config=config_for("s3://locked-bucket/churn.csv", []), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DatasetError)
    assert "no permission to read s3://locked-bucket/churn.csv" in str(error)
    assert registry_state() == before
