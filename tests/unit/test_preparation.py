"""flows.preparation: the validated table is let go once it is split."""

from __future__ import annotations

import pandas as pd

from flows.preparation import empty_like


def test_empty_like_keeps_columns_and_dtypes_and_no_rows():
    frame = pd.DataFrame({"plan": pd.Series(["a", None, "b"], dtype="str"), "tenure": [1, 2, 3],
                          "charges": [1.5, None, 2.0], "flag": [True, False, True],
                          "note": pd.Series(["x", 1, None], dtype=object), "churn": [0, 1, 0]})
    empty = empty_like(frame)
    assert empty.empty and list(empty.columns) == list(frame.columns)
    assert empty.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(empty, frame.iloc[:0], check_index_type=False)
