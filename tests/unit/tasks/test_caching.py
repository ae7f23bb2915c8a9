"""mlpipe.tasks.caching: what a cached step's key is made of, the code hash, and the per-run cache switch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CompoundCachePolicy, Inputs

import mlpipe.tasks
from mlpipe.core.lineage import source_hash
from mlpipe.tasks import caching
from mlpipe.tasks.caching import (
    CompactPickle,
    NamedInputs,
    cache_key,
    cached_steps,
    key_inputs,
    result_storage,
    step_key,
)


def code_hash(root):
    return source_hash.__wrapped__(root)  # not the memoised one: these trees change under it
from mlpipe.core.config import CacheConfig, DataConfig, SplitConfig

# What a cache key must never hash: a table, or something that carries one.
FRAME_TYPES = re.compile(r"\b(DataFrame|Series|ValidatedData|Split|ndarray)\b")


def _all_tasks() -> list[Task]:
    found = {}
    for info in pkgutil.walk_packages(mlpipe.tasks.__path__, "mlpipe.tasks."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Task) and value.fn.__module__ == info.name:
                found[info.name + "." + value.fn.__name__] = value
    return list(found.values())


def _keyed_parameters(step: Task) -> set[str]:
    """The parameters whose values enter `step`'s cache key."""
    parameters = set(inspect.signature(step.fn).parameters)
    declared = key_inputs(step)
    if declared is not None:
        return set(declared)
    policy = step.cache_policy
    policies = policy.policies if isinstance(policy, CompoundCachePolicy) else [policy]
    keyed = set()
    for item in policies:
        if isinstance(item, Inputs):
            keyed |= parameters - set(item.exclude)
    return keyed


def test_the_walk_finds_the_cached_steps():
    names = {step.name for step in _all_tasks()}
    assert {"load", "validate", "features", "select-model", "fit", "tune", "evaluate", "register"} <= names


def test_no_task_hashes_a_frame_into_its_cache_key():
    offenders = []
    for step in _all_tasks():
        signature = inspect.signature(step.fn)
        for name in _keyed_parameters(step):
            annotation = signature.parameters[name].annotation
            if FRAME_TYPES.search(str(annotation)):
                offenders.append(f"{step.name}({name}: {annotation})")
    assert not offenders, f"cache keys that would hash a frame: {offenders}"


def test_the_frame_check_would_catch_a_default_policy_with_a_frame():
    @task
    def careless(frame: pd.DataFrame, config: DataConfig) -> int:
        return len(frame)

    assert "frame" in _keyed_parameters(careless)
    assert _keyed_parameters(careless.with_options(cache_policy=NO_CACHE)) == set()


def test_every_declared_key_input_is_a_parameter_of_its_task():
    for step in _all_tasks():
        declared = key_inputs(step)
        if declared is not None:
            assert set(declared) <= set(inspect.signature(step.fn).parameters), step.name


def test_cache_key_needs_names():
    with pytest.raises(ValueError, match="name the inputs"):
        cache_key()


def _key(names, **inputs):
    return NamedInputs(names=tuple(names)).compute_key(None, inputs, {})


def test_the_key_changes_with_the_named_inputs_and_never_with_a_frame():
    frame = pd.DataFrame({"a": [1, 2]})
    base = _key(["fingerprint", "config"], frame=frame, fingerprint="sha256:aa", config=SplitConfig())
    assert base == _key(["fingerprint", "config"], frame=frame.assign(a=[3, 4]), fingerprint="sha256:aa",
                        config=SplitConfig())
    assert base != _key(["fingerprint", "config"], frame=frame, fingerprint="sha256:bb", config=SplitConfig())
    assert base != _key(["fingerprint", "config"], frame=frame, fingerprint="sha256:aa", config=SplitConfig(seed=1))


def test_the_whole_policy_changes_with_the_pipeline_code(monkeypatch):
    @task(cache_policy=cache_key("fingerprint"))
    def step(frame: pd.DataFrame, fingerprint: str) -> int:
        return 0

    context = SimpleNamespace(task=step)
    key = lambda: step.cache_policy.compute_key(context, {"frame": None, "fingerprint": "x"}, {})  # noqa: E731
    before = key()
    monkeypatch.setattr(caching, "source_hash", lambda: "another-version")
    assert key() != before


def _tree(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_code_hash_covers_subfolders(tmp_path):
    _tree(tmp_path, {"tasks/a.py": "A = 1\n", "tasks/adapters/b.py": "B = 1\n", "flows/f.py": "F = 1\n"})
    before = code_hash(tmp_path)
    assert code_hash(tmp_path) == before
    (tmp_path / "tasks" / "adapters" / "b.py").write_text("B = 2\n")
    assert code_hash(tmp_path) != before


def test_code_hash_changes_when_a_file_moves_and_ignores_other_files(tmp_path):
    _tree(tmp_path, {"tasks/a.py": "A = 1\n", "flows/f.py": "F = 1\n"})
    before = code_hash(tmp_path)
    _tree(tmp_path, {"tasks/notes.md": "not code", "data/x.py": "X = 1\n"})
    assert code_hash(tmp_path) == before
    (tmp_path / "tasks" / "a.py").rename(tmp_path / "flows" / "a.py")
    assert code_hash(tmp_path) != before


def test_cached_steps_refuses_a_task_without_a_declared_key(tmp_path):
    @task
    def uncached(x: int) -> int:
        return x

    cached = cached_steps(CacheConfig(storage=str(tmp_path / "cache")))
    with pytest.raises(TypeError, match="'uncached' declares no cache key"):
        cached(uncached)


def test_cached_steps_persists_to_the_storage_or_turns_caching_off(tmp_path):
    @task(cache_policy=cache_key("x"))
    def step(x: int) -> int:
        return x

    on = cached_steps(CacheConfig(storage=str(tmp_path / "cache")), refresh=True)(step)
    assert on.refresh_cache is True and str(on.result_storage) == str(tmp_path / "cache")
    assert isinstance(on.result_serializer, CompactPickle)
    assert (tmp_path / "cache").is_dir() and key_inputs(on) == ("x",)
    off = cached_steps(CacheConfig(enabled=False, storage=str(tmp_path / "unused")))(step)
    assert off.cache_policy is NO_CACHE and off.persist_result is False
    assert not (tmp_path / "unused").exists()


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


def _frame(rows: int = 5000) -> pd.DataFrame:
    return pd.DataFrame({"plan": pd.Series(["basic", "plus", None, "pro"] * (rows // 4), dtype="str"),
                         "charges": [float(i % 97) if i % 11 else float("nan") for i in range(rows)],
                         "tenure": list(range(rows)),
                         "note": pd.Series(["a", 1, None, 2.5] * (rows // 4), dtype=object)})


def test_compact_pickle_round_trips_frames_models_and_plain_values():
    from sklearn.linear_model import LogisticRegression

    from mlpipe.data.validation import ValidatedData, ValidationReport

    serializer = CompactPickle()
    frame = _frame()
    validated = ValidatedData(frame=frame, target="tenure", report=ValidationReport(rows=len(frame)),
                              row_keys=pd.Series(range(len(frame)), dtype="uint64"), key_name="content")
    back = serializer.loads(serializer.dumps(validated))
    pd.testing.assert_frame_equal(back.frame, frame)
    pd.testing.assert_series_equal(back.row_keys, validated.row_keys)
    assert back.report == validated.report and back.key_name == "content"
    back.frame.loc[0, "charges"] = -1.0  # rebuilt on writable buffers
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    again = serializer.loads(serializer.dumps(model))
    assert (again.coef_ == model.coef_).all() and again.predict([[2.5]]).tolist() == [1]
    assert serializer.loads(serializer.dumps({"a": [1, 2], "b": None})) == {"a": [1, 2], "b": None}


def test_compact_pickle_keeps_arrow_columns_in_their_chunks_without_copying_them():
    import pyarrow as pa

    from mlpipe.tasks.caching import _dumps

    chunked = pa.chunked_array([pa.array(["basic", None, "plus"] * 20_000, pa.large_string())] * 8)
    frame = pd.DataFrame({"plan": pd.Series(pd.arrays.ArrowStringArray(chunked), dtype="str"),
                          "code": pd.Series(["x", None, "y"] * 160_000, dtype="string[pyarrow]"),
                          "count": pd.Series(pa.chunked_array([pa.array([1, None, 3] * 80_000)] * 2),
                                             dtype=pd.ArrowDtype(pa.int64())),
                          "charges": np.arange(480_000, dtype="float64")})
    before, buffers = pa.total_allocated_bytes(), []
    _dumps(frame, buffers)
    assert pa.total_allocated_bytes() - before < 1 << 20  # pandas' own pickling combines them: +13 MiB here
    assert sum(buffer.raw().nbytes for buffer in buffers) >= frame.memory_usage(deep=True).sum() * 0.9
    back = CompactPickle().loads(CompactPickle().dumps(frame))
    pd.testing.assert_frame_equal(back, frame)
    assert back["plan"].array._pa_array.num_chunks == 8 and back.dtypes.equals(frame.dtypes)
    assert back["plan"].isna().sum() == 160_000 and back["plan"].iloc[2] == "plus"


def test_compact_pickle_is_what_a_persisted_record_names_and_is_smaller_than_prefects_pickle():
    from prefect.serializers import PickleSerializer, Serializer

    assert isinstance(Serializer(type="mlpipe/compact-pickle"), CompactPickle)
    frame = _frame(40_000)
    blob = CompactPickle().dumps(frame)
    blob.decode("ascii")  # the record holds it as JSON text
    assert len(blob) * 3 < len(PickleSerializer().dumps(frame))
    with pytest.raises(ValueError, match="CompactPickle"):
        CompactPickle().loads(PickleSerializer().dumps(frame))


def test_a_cached_frame_step_persists_compactly_and_is_read_back(tmp_path):
    from prefect import flow

    calls = []

    @task(cache_policy=cache_key("seed"), persist_result=True, cache_result_in_memory=False)
    def make(seed: int) -> pd.DataFrame:
        calls.append(seed)
        return _frame(400)

    cached = cached_steps(CacheConfig(storage=str(tmp_path / "cache")))

    @flow
    def run() -> pd.DataFrame:
        return cached(make)(1)

    first, second = run(), run()
    pd.testing.assert_frame_equal(first, _frame(400))
    pd.testing.assert_frame_equal(second, first)
    assert calls == [1]  # the second run read the persisted result
    stored = [path.read_bytes() for path in (tmp_path / "cache").iterdir()]
    assert stored and all(b'"mlpipe/compact-pickle"' in content for content in stored)
