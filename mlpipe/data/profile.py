"""The data profile: one row per column of the dataset, as validation saw it. What a person
looks at before trusting a model: the inferred type, the missing share, the tokens read as
missing, the distinct values, and the column's role (feature, ID, dropped, and why).

Published by the validate step as a Prefect table artifact and logged with the registered
model's run as an MLflow table (`data_profile.json`).
"""

from __future__ import annotations

import pandas as pd

from mlpipe.model.conform import holds_booleans, is_numeric

DISTINCT_SAMPLE_ROWS = 100_000  # distinct values of a bigger column: counted on every k-th row ("at least")


def _distinct(values: pd.Series) -> str:
    if len(values) <= DISTINCT_SAMPLE_ROWS:
        return str(int(values.nunique()))
    step = -(-len(values) // DISTINCT_SAMPLE_ROWS)  # evenly spread rows: a view, no draw over every row
    return f">= {int(values.iloc[::step].nunique())}"


def _kind(values: pd.Series) -> str:
    if holds_booleans(values):
        return "boolean"
    if is_numeric(values):
        return "integer" if pd.api.types.is_integer_dtype(values) else "numeric"
    return "text"


def tokens_text(counts: dict[str, int], limit: int = 5) -> str:
    """e.g. "'?' x12, (blank) x3": tokens by how often they stood in a column, commonest first."""
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{'(blank)' if t == '' else repr(t)} x{n}" for t, n in ranked[:limit])


def _tokens(column: str, report) -> str:
    found = {**report.missing_tokens.get(column, {}), **report.auto_na_values.get(column, {})}
    auto = " (found in a numeric column)" if column in report.auto_na_values else ""
    return tokens_text(found) + auto


def _role(column: str, report) -> str:
    if column in report.dropped_columns:
        why = report.dropped_columns[column]
        return why if why.startswith("ID") else f"dropped: {why}"
    if column in report.numeric_features:
        return "feature (numeric)"
    if column in report.categorical_features:
        return "feature (categorical)"
    return "not used"


def profile_row(column: str, values: pd.Series, role: str, report) -> dict:
    return {"column": column, "role": role, "type": _kind(values),
            "missing": round(float(values.isna().mean()), 4) if len(values) else 0.0,
            "tokens_read_as_missing": _tokens(column, report), "distinct": _distinct(values.dropna())}


def column_profile(features: pd.DataFrame, *, target: str, dropped: pd.DataFrame, report) -> list[dict]:
    """A row per column: the features as validation left them (numbers parsed, tokens missing),
    the target, and the columns dropped by data.drop_columns."""
    rows = [{"column": target, "role": "target", "type": "binary (0/1)", "missing": 0.0,
             "tokens_read_as_missing": _tokens(target, report),
             "distinct": "2" + (f" (+{report.unlabeled_rows} unlabeled rows dropped)"
                                if report.unlabeled_rows else "")}]
    rows += [profile_row(c, features[c], _role(c, report), report) for c in features.columns]
    rows += [profile_row(c, dropped[c], _role(c, report), report) for c in dropped.columns]
    return rows


def profile_markdown(rows: list[dict]) -> str:
    """The profile as a markdown table (for logs and the model card's neighbours)."""
    head = "| column | role | type | missing | tokens read as missing | distinct |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| `{r['column']}` | {r['role']} | {r['type']} | {r['missing']:.1%} | "
                          f"{r['tokens_read_as_missing'] or '-'} | {r['distinct']} |\n" for r in rows)
