"""mlpipe.cli.main: the one error line a failed command prints."""

from __future__ import annotations

import io

import pytest
import typer
from rich.console import Console

from mlpipe.cli import main


def test_an_error_line_prints_brackets_as_written(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(main, "err_console", Console(file=out, highlight=False, soft_wrap=True))
    with pytest.raises(typer.Exit):
        main._fail("model.family 'mlp' needs PyTorch: pip install -e '.[torch]'", debug=False)
    assert out.getvalue() == "error: model.family 'mlp' needs PyTorch: pip install -e '.[torch]'\n"
