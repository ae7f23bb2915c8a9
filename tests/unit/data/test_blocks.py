"""mlpipe.data.blocks: a table cut into blocks gets the keys, sides, labels and statistics that
validation and the split give the whole table at once (no Ray here: the blocks are slices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.core.config import DataConfig, SplitConfig
from mlpipe.core.errors import DataValidationError
from mlpipe.data.blocks import (BASE_KEY, HOLDOUT, KEY, LABEL, block_statistics, check_table, keyed_block,
                                label_rule, merge_statistics, number_copies, repeated_content_keys, sample_rows,
                                split_block, unique_content_keys)
from mlpipe.data.splitting import split_validated
from mlpipe.data.validation import validate_dataset


def _table(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Coarse columns (many identical rows, as Titanic's), a token, unlabeled rows, an ID."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "id": np.arange(n),
        "plan": rng.choice(["basic", "pro", "?"], n),
        "calls": rng.integers(0, 4, n).astype("float64"),
        "churn": rng.choice(["yes", "no"], n, p=[0.3, 0.7]).astype(object),
    })
    frame.loc[rng.choice(n, 9, replace=False), "churn"] = None
    frame.loc[rng.choice(n, 3, replace=False), "churn"] = "maybe"
    return frame


def _blocks(frame: pd.DataFrame, cuts: int = 7) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(frame), cuts + 1).astype(int)
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(edges[:-1], edges[1:])]


def _streamed_sides(frame: pd.DataFrame, config: DataConfig, split: SplitConfig) -> pd.DataFrame:
    """What the Ray path does, with Python loops in place of Ray Data: every block keyed, the
    repeated content keys grouped over all blocks and numbered, then labelled and split."""
    stats = merge_statistics([block_statistics(b, config)["statistics"][0] for b in _blocks(frame)])
    rule, _ = label_rule(stats, config, 2)
    keyed = [keyed_block(b, config) for b in _blocks(frame)]
    if BASE_KEY in keyed[0].columns:
        counts = pd.concat([k[BASE_KEY] for k in keyed]).value_counts()
        repeated = np.sort(counts.index[counts > 1].to_numpy(dtype="uint64"))
        singles = [unique_content_keys(k, repeated) for k in keyed]
        grouped = pd.concat([repeated_content_keys(k, repeated) for k in keyed]).groupby(BASE_KEY, sort=False)
        keyed = singles + [number_copies(group) for _, group in grouped]
    return pd.concat([split_block(k, config.target, rule, split.holdout_fraction, split.seed) for k in keyed])


@pytest.mark.parametrize("ids", [[], ["id"]])
def test_blocks_give_every_row_its_local_key_and_side(ids):
    frame = _table()
    config = DataConfig(target="churn", positive_label="yes", id_columns=ids, min_rows=10)
    split = SplitConfig(holdout_fraction=0.25, seed=7)
    local = split_validated(validate_dataset(frame, config, 2), split)
    streamed = _streamed_sides(frame, config, split)
    holdout = streamed[streamed[HOLDOUT]]
    assert sorted(holdout[KEY].tolist()) == sorted(local.holdout_keys.tolist())
    assert len(streamed) == len(local.train) + len(local.holdout)  # the same unlabeled rows dropped
    if ids:  # rows named by their ID: the same rows, one by one
        assert sorted(holdout["id"]) == sorted(frame.loc[local.holdout.index, "id"])
    else:  # identical rows are interchangeable: the same rows as a multiset
        columns = ["plan", "calls"]
        mine = holdout[columns].astype(str).value_counts().sort_index()
        theirs = frame.loc[local.holdout.index, columns].replace("?", np.nan).astype(str).value_counts().sort_index()
        pd.testing.assert_series_equal(mine, theirs, check_names=False)
    assert streamed[LABEL].tolist().count(1) == int(local.train["churn"].sum() + local.holdout["churn"].sum())


def test_statistics_merged_over_blocks_are_the_tables():
    frame = _table()
    config = DataConfig(target="churn", positive_label="yes", min_rows=10)
    stats = merge_statistics([block_statistics(b, config)["statistics"][0] for b in _blocks(frame)])
    report = validate_dataset(frame, config, 2).report
    assert stats.rows == len(frame)
    assert stats.tokens == report.missing_tokens == {"plan": {"?": int((frame["plan"] == "?").sum())}}
    assert stats.missing_share()["plan"] == pytest.approx((frame["plan"] == "?").mean())
    rule, warnings = label_rule(stats, config, 2)
    assert rule.unlabeled == report.unlabeled_rows == 12
    assert (rule.positive, rule.negative) == ("yes", "no") and "dropped 12 unlabeled" in warnings[0]


def test_the_contract_refuses_on_merged_statistics():
    frame = _table()
    stats = merge_statistics([block_statistics(b, DataConfig(target="churn"))["statistics"][0]
                              for b in _blocks(frame)])
    with pytest.raises(DataValidationError, match="required feature 'tenure'"):
        check_table(stats, DataConfig(target="churn", required_features=["tenure"], min_rows=10))
    with pytest.raises(DataValidationError, match="unlabeled"):
        label_rule(stats, DataConfig(target="churn", positive_label="yes", unlabeled_rows="fail"), 2)
    with pytest.raises(DataValidationError, match="target 'nope' is missing|target column 'nope'"):
        check_table(stats, DataConfig(target="nope", min_rows=10))
    gap = frame.assign(notes=None)
    stats = merge_statistics([block_statistics(b, DataConfig(target="churn"))["statistics"][0] for b in _blocks(gap)])
    with pytest.raises(DataValidationError, match="column 'notes' is entirely empty"):
        check_table(stats, DataConfig(target="churn", min_rows=10))
    check_table(stats, DataConfig(target="churn", min_rows=10, drop_columns=["notes"]))
    with pytest.raises(DataValidationError, match="column 'notes' is entirely empty"):
        validate_dataset(gap, DataConfig(target="churn", positive_label="yes", min_rows=10), 2)  # as locally


def test_a_sample_drawn_by_key_does_not_depend_on_the_blocks():
    frame = _table()
    config = DataConfig(target="churn", positive_label="yes", id_columns=["id"], min_rows=10)
    rows = _streamed_sides(frame, config, SplitConfig())
    whole = sample_rows(rows, 0.1, "salt")
    parts = pd.concat([sample_rows(b, 0.1, "salt") for b in _blocks(rows, 5)])
    assert sorted(whole["id"]) == sorted(parts["id"])
    assert 200 < len(whole) < 400
    rest = sample_rows(rows, 0.1, "salt", inside=False)
    assert len(rest) + len(whole) == len(rows) and not set(rest["id"]) & set(whole["id"])
