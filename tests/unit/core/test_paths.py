"""mlpipe.core.paths: where the code and the embedded state live."""

from __future__ import annotations

from mlpipe.core.paths import LIBRARY_ROOT, PACKAGE_ROOT, code_folders, project_home


def test_the_checkout_holds_the_library_tasks_and_flows():
    assert (LIBRARY_ROOT / "core" / "paths.py").is_file() and LIBRARY_ROOT.parent == PACKAGE_ROOT
    assert (PACKAGE_ROOT / "prefect.yaml").is_file()
    assert code_folders() == ["mlpipe", "tasks", "flows"]


def test_installed_from_a_wheel_the_code_is_the_mlpipe_folder_alone(tmp_path):
    for folder in ("mlpipe/core", "mlpipe/tasks", "mlpipe/flows", "tasks"):  # tasks/: another project's
        (tmp_path / folder).mkdir(parents=True)
    assert code_folders(tmp_path) == ["mlpipe"]


def test_project_home_is_mlpipe_home_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path / "home"))
    assert project_home() == (tmp_path / "home").resolve()


def test_project_home_defaults_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPIPE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_home() == tmp_path.resolve()
    monkeypatch.setenv("MLPIPE_HOME", "")  # empty counts as unset
    assert project_home() == tmp_path.resolve()
