"""tasks.promotion: re-scoring the registered champion on the comparison rows. (The decision
and the comparison set are tested in test_evaluation_promotion.py.)"""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from mlpipe.stages.promotion import rescore_champion


def test_the_champion_is_rescored_as_registered(register_tiny_model, tiny_model):
    model, frame, columns = tiny_model
    version = register_tiny_model("m")
    rows = frame.iloc[10:50]
    score = rescore_champion("m", version.version, rows, "y", columns, roc_auc_score)
    assert score == pytest.approx(roc_auc_score(rows["y"], model.predict_proba(rows[columns])[:, 1]))
    with pytest.raises(KeyError):
        rescore_champion("m", version.version, rows.drop(columns="tenure"), "y", columns, roc_auc_score)
