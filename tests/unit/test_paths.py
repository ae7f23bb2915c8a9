"""tasks.paths: where the code and the embedded state live."""

from __future__ import annotations

from tasks.paths import PACKAGE_ROOT, project_home


def test_package_root_holds_tasks_and_flows():
    assert (PACKAGE_ROOT / "tasks" / "paths.py").is_file()
    assert (PACKAGE_ROOT / "flows").is_dir()


def test_project_home_is_mlpipe_home_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path / "home"))
    assert project_home() == (tmp_path / "home").resolve()


def test_project_home_defaults_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPIPE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_home() == tmp_path.resolve()
    monkeypatch.setenv("MLPIPE_HOME", "")  # empty counts as unset
    assert project_home() == tmp_path.resolve()
