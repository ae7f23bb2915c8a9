"""A simulated year of monthly retrains on a growing table (benchmarks/retraining_year.py, short):
the gate compares models only on rows neither trained on, new models win when they are better
there, a worse retrain leaves the champion alone, the drift monitor flags the shift, and
`mlpipe history` shows the whole year."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.retraining_year import MODEL, format_post_shift, format_table, post_shift_scores, run_year
from mlpipe.adapters.mlflow.aliases import comparison_keys, promotion_history
from mlpipe.adapters.mlflow.tracking import client
from mlpipe.adapters.mlflow.versions import version_tags
from mlpipe.data.splitting import SplitParams, hash_holdout_side, row_keys

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
# `auto` as by default, between two candidates (a forest's cross-validation was a third of each month)
FAST = ("model.candidates=[logistic_regression, hist_gradient_boosting]",
        "model.params.hist_gradient_boosting={learning_rate: 0.15, max_iter: 40, max_leaf_nodes: 15}")
SHIFT, WEAK, TOLERANCE = 7, 4, 0.005


def train_ids(snapshot: Path, tags: dict[str, str]) -> set[str]:
    """Customers a version trained on: its snapshot's rows on the train side of its recorded split."""
    raw = pd.read_csv(snapshot)
    params = SplitParams.from_tags(tags)
    assert params is not None and params.method == "hash" and params.key == "id:customer_id"
    holdout = hash_holdout_side(row_keys(raw, ["customer_id"]).to_numpy(), params.holdout_fraction, params.seed)
    return set(raw.loc[~holdout, "customer_id"])


def rows_with_keys(snapshot: Path, hex_keys: list[str]) -> pd.DataFrame:
    raw = pd.read_csv(snapshot)
    wanted = {int(k, 16) for k in hex_keys}
    return raw[row_keys(raw, ["customer_id"]).isin(wanted).to_numpy()]


def test_a_year_of_retraining(workspace, capsys):
    months = run_year(workspace / "snapshots", rows_per_month=600, shift_month=SHIFT, weak_month=WEAK,
                      overrides=FAST, log=lambda line: None)
    table = format_table(months)
    with capsys.disabled():
        print("\n" + table)
    snapshots = {m.month: workspace / "snapshots" / f"churn-{m.month:02d}.csv" for m in months}
    trained_in = {m.version: m.month for m in months}
    assert [m.version for m in months] == [str(i) for i in range(1, 13)]

    # the first model has nothing to beat; every later decision is compared on unseen rows
    assert months[0].decision == "promoted" and months[0].champion_before is None
    history = {entry["run_id"]: entry for entry in promotion_history(MODEL)}
    for m in months[1:]:
        assert m.comparison_rows is not None and m.comparison_rows >= 100, table
        assert m.champion_on_set is not None and m.challenger_on_set is not None
        promoted = m.challenger_on_set >= m.champion_on_set - TOLERANCE - 1e-12
        assert (m.decision == "promoted") == promoted, (m, table)
        # same split parameters every month: the comparison set is this run's whole holdout
        assert "same hash split" in history[m.history_run_id]["comparison_basis"]

    # every comparison set holds no row that either model trained on
    for m in months[1:]:
        keys = comparison_keys(m.history_run_id)
        assert len(keys) == m.comparison_rows
        compared = set(rows_with_keys(snapshots[m.month], keys)["customer_id"])
        assert len(compared) == m.comparison_rows
        champion_rows = train_ids(snapshots[trained_in[m.champion_before]],
                                  version_tags(MODEL, m.champion_before))
        candidate_rows = train_ids(snapshots[m.month], version_tags(MODEL, m.version))
        assert compared.isdisjoint(champion_rows) and compared.isdisjoint(candidate_rows)

    # more data wins before the shift; a deliberately weak retrain leaves the champion alone
    weak = months[WEAK - 1]
    assert weak.decision == "challenger" and weak.challenger_on_set < weak.champion_on_set - TOLERANCE
    assert months[WEAK].champion_before == weak.champion_before
    assert sum(m.decision == "promoted" for m in months[1:SHIFT - 1] if m.month != WEAK) >= 3, table

    # the drift monitor is quiet before the shift and flags the month it happens
    assert [m.drift for m in months[1:SHIFT - 1]] == [False] * (SHIFT - 2), table
    assert months[SHIFT - 1].drift is True, table

    # after the shift, new models take over, and on post-shift rows neither model saw, the final
    # champion beats the last model trained before the shift: the old model truly got worse
    final = [m for m in months if m.decision == "promoted"][-1]
    assert final.month >= SHIFT, table
    assert sum(m.decision == "promoted" for m in months[SHIFT - 1:]) >= 2, table
    scores = post_shift_scores(workspace / "snapshots", months, SHIFT)
    with capsys.disabled():
        print(format_post_shift(scores))
    assert scores["final"] == final.version and scores["rows"] >= 100
    assert scores["final_auc"] > scores["before_shift_auc"]

    # the registry explains each version, and `mlpipe history` shows the whole year
    card = client().get_model_version(MODEL, final.version).description
    assert f"v{final.version}" in card and "comparison set" in card and "hash split" in card
    assert f"now **v{final.version}**" in client().get_registered_model(MODEL).description
    env = {**os.environ, "COLUMNS": "250"}
    shown = subprocess.run([str(Path(sys.executable).with_name("mlpipe")), "history", "--model", MODEL],
                           capture_output=True, text=True, env=env, timeout=120, cwd=workspace)
    assert shown.returncode == 0, shown.stderr
    rows_shown = [line.split("│") for line in shown.stdout.splitlines() if line.count("│") >= 5]
    decisions = [(cells[2].strip(), cells[3].strip()) for cells in rows_shown
                 if cells[3].strip() and cells[3].strip() != "version"]  # not the header, nor wrapped lines
    assert decisions == [("promote" if m.decision == "promoted" else "challenger", m.version) for m in months]
    assert np.isfinite([m.candidate_score for m in months]).all()
