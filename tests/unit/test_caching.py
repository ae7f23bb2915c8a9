"""tasks.caching: the step key and where cached results live."""

from __future__ import annotations

from tasks.caching import result_storage, step_key
from tasks.config import SplitConfig


def test_step_key_is_stable_and_order_sensitive():
    assert step_key("sha256:aa", SplitConfig()) == step_key("sha256:aa", SplitConfig())
    assert len(step_key("a")) == 24
    assert step_key("a", "b") != step_key("b", "a")
    assert step_key("ab") != step_key("a", "b")  # parts are separated, not concatenated


def test_step_key_uses_model_content():
    assert step_key("x", SplitConfig(seed=1)) != step_key("x", SplitConfig(seed=2))
    assert step_key("x", SplitConfig(seed=1)) == step_key("x", SplitConfig(seed=1, stratify=True))


def test_local_result_storage_is_relative_to_the_project_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    assert result_storage(".mlpipe/cache") == tmp_path.resolve() / ".mlpipe" / "cache"
    assert (tmp_path / ".mlpipe" / "cache").is_dir()
    assert result_storage("block:local-file-system/x") == "local-file-system/x"
