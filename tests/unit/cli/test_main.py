"""mlpipe.cli.main: the one error line a failed command prints."""

from __future__ import annotations

import io

import pytest
import typer
from rich.console import Console

from mlpipe.cli import main


def test_history_hides_reruns_that_changed_nothing_unless_all(workspace, monkeypatch):
    from typer.testing import CliRunner

    from mlpipe.adapters.mlflow.aliases import record_promotion

    record_promotion("m", version="1", alias="champion", previous=None, action="promote", reason="no champion yet")
    for _ in range(2):
        record_promotion("m", version="1", alias="champion", previous="1", action="champion",
                         reason="version 1 is already the champion")
    record_promotion("m", version="2", alias="challenger", previous="1", action="challenger", reason="worse")
    monkeypatch.setattr(main, "console", Console(file=io.StringIO(), width=200, highlight=False, soft_wrap=True))

    def history(*args: str) -> str:
        main.console.file = io.StringIO()
        result = CliRunner().invoke(main.app, ["history", "--model", "m", *args])
        assert result.exit_code == 0, result.output
        return main.console.file.getvalue()

    default, everything = history(), history("--all")
    assert "no champion yet" in default and "worse" in default and "already the champion" not in default
    assert "2 rerun(s) of the champion that changed nothing not shown (--all)" in default
    assert everything.count("already the champion") == 2 and "not shown" not in everything


def test_the_summary_points_at_a_tracking_server_or_says_how_to_serve_a_local_store():
    from types import SimpleNamespace

    server = SimpleNamespace(tracking_uri="http://127.0.0.1:5000/", model_name="churn-classifier", version="3")
    assert main._mlflow_hint(server) == "http://127.0.0.1:5000/#/models/churn-classifier/versions/3"
    local = SimpleNamespace(tracking_uri="sqlite:////p/.mlpipe/mlflow.db", model_name="m", version="1")
    assert main._mlflow_hint(local) == ("mlflow ui --backend-store-uri sqlite:////p/.mlpipe/mlflow.db --port 5000, "
                                        "then http://127.0.0.1:5000")


def test_an_error_line_prints_brackets_as_written(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(main, "err_console", Console(file=out, highlight=False, soft_wrap=True))
    with pytest.raises(typer.Exit):
        main._fail("model.family 'mlp' needs PyTorch: pip install -e '.[torch]'", debug=False)
    assert out.getvalue() == "error: model.family 'mlp' needs PyTorch: pip install -e '.[torch]'\n"
