"""Seeded generator of the bundled churn-like sample (`data/churn.csv`).

The data looks like a telecom churn extract: numeric and categorical columns, missing values,
a unique customer ID, a `total_charges` column stored as text with blanks for brand-new
customers, and a "Yes"/"No" target at about 25% positives. The target depends on the features
through a known logistic model, so a good classifier reaches a holdout roc_auc of about 0.85.

    python data/generate_churn.py [--rows 5000] [--seed 7] [--out data/churn.csv]
    python data/generate_churn.py --dirty [--decimal-comma] --out /tmp/churn_export.csv

`--dirty` writes the same customers as people export them from a spreadsheet or a European
database: semicolon-delimited, ints kept as ints (with gaps), numbers stored as text with blanks,
a True/False column with gaps, missing values written as `?` and `N/A` in numeric and text
columns (and `unknown` in one numeric column), a few `?` targets, and optionally a decimal comma.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def generate_churn(rows: int = 5000, seed: int = 7, month: int | None = None, price_sensitivity: float = 1.0,
                   price_increase: float = 0.0) -> pd.DataFrame:
    """Return `rows` synthetic customers; the same `seed` always gives the same frame.

    Knobs for simulating time (defaults reproduce the bundled sample): `month` adds a `month`
    column with that value; `price_sensitivity` multiplies the effect of the monthly charge on
    churn (2.0: it doubles, a concept shift), `price_increase` raises every monthly charge by
    that much (a covariate shift the drift monitor can see)."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.24, 0.21])
    internet = rng.choice(["DSL", "Fiber optic", "No"], rows, p=[0.34, 0.44, 0.22])
    payment = rng.choice(
        ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"],
        rows,
        p=[0.34, 0.23, 0.22, 0.21],
    )
    max_tenure = np.where(contract == "Month-to-month", 40, 72)
    tenure = np.floor(rng.uniform(0, 1, rows) ** 1.3 * (max_tenure + 1)).astype(int)
    tenure[rng.random(rows) < 0.015] = 0  # brand-new customers: no total charges yet
    monthly = np.round(
        np.where(internet == "Fiber optic", 80, np.where(internet == "DSL", 55, 22))
        + rng.normal(0, 9, rows)
        + price_increase,
        2,
    ).clip(18, 120 + price_increase)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, rows), 2)
    prev_minutes = np.round(rng.gamma(4.0, 60.0, rows), 1)
    drop = rng.beta(1.2, 6.0, rows)
    current_minutes = np.round(prev_minutes * (1 - drop), 1)
    support_calls = rng.poisson(1.2, rows)

    logit = 1.5 * (
        -1.75
        + 1.35 * (contract == "Month-to-month")
        - 0.9 * (contract == "Two year")
        - 0.045 * tenure
        + 0.75 * (internet == "Fiber optic")
        + 0.55 * (payment == "Electronic check")
        + 0.018 * price_sensitivity * (monthly - 65)
        + 0.32 * support_calls
        + 5.0 * (drop - 0.15)
        + rng.normal(0, 0.2, rows)
    )
    churn = rng.random(rows) < 1 / (1 + np.exp(-logit))

    frame = pd.DataFrame(
        {
            "customer_id": [f"C{seed:02d}-{i:06d}" for i in rng.permutation(rows)],
            "gender": rng.choice(["Female", "Male"], rows),
            "senior_citizen": (rng.random(rows) < 0.16).astype(int),
            "partner": rng.choice(["Yes", "No"], rows, p=[0.48, 0.52]),
            "tenure": tenure,
            "contract": contract,
            "internet_service": internet,
            "payment_method": payment,
            "paperless_billing": rng.choice(["Yes", "No"], rows, p=[0.59, 0.41]),
            "monthly_charges": monthly,
            "total_charges": [" " if t == 0 else f"{v:.2f}" for t, v in zip(tenure, total)],
            "prev_month_minutes": prev_minutes,
            "current_month_minutes": current_minutes,
            "support_calls": support_calls.astype(float),
            "churn": np.where(churn, "Yes", "No"),
        }
    )
    if month is not None:
        frame.insert(1, "month", month)
    # Real extracts have gaps: a few missing values in numeric and categorical columns.
    for column, share in [("payment_method", 0.02), ("support_calls", 0.03), ("prev_month_minutes", 0.01)]:
        frame.loc[rng.random(rows) < share, column] = np.nan
    return frame


def dirty_export(frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """`frame` (from `generate_churn`) with the types of a messy export: `support_calls` as ints
    with gaps, `monthly_charges` as text with a few blanks, `paperless_billing` as True/False with
    gaps; missing values written as tokens: `?` in `tenure` and `internet_service`, `N/A` in
    `contract` and `prev_month_minutes`, `unknown` in `support_calls` (which no default
    `data.na_values` names: validation finds it), and `?` for a few targets (unlabeled rows).
    The other values are unchanged (blanks, gaps and tokens are missing values)."""
    rng = np.random.default_rng(seed + 1)
    rows = len(frame)
    out = frame.copy()
    out["support_calls"] = out["support_calls"].astype("Int64")  # 3, not 3.0; a gap stays empty
    blank = rng.random(rows) < 0.02
    out["monthly_charges"] = [" " if gap else f"{value:.2f}" for gap, value in zip(blank, out["monthly_charges"])]
    paperless = (out["paperless_billing"] == "Yes").astype(object)
    paperless[rng.random(rows) < 0.03] = None
    out["paperless_billing"] = paperless
    for column, token, share in (("tenure", "?", 0.005), ("internet_service", "?", 0.004), ("contract", "N/A", 0.006),
                                 ("prev_month_minutes", "N/A", 0.004), ("support_calls", "unknown", 0.003),
                                 ("churn", "?", 0.002)):
        values = out[column].astype(object)
        values[rng.random(rows) < share] = token
        out[column] = values
    return out


def write_dirty_export(path: Path | str, rows: int = 5000, seed: int = 7, decimal_comma: bool = False) -> Path:
    """Write the sample as a messy export (see `dirty_export`): semicolon-delimited, and with a
    decimal comma (`1034,66`) when `decimal_comma`."""
    frame = dirty_export(generate_churn(rows, seed), seed)
    if decimal_comma:  # the text columns too: an export writes every number the same way
        for column in ("monthly_charges", "total_charges"):
            frame[column] = frame[column].str.replace(".", ",", regex=False)
    frame.to_csv(path, sep=";", index=False, decimal="," if decimal_comma else ".")
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("churn.csv"))
    parser.add_argument("--dirty", action="store_true", help="write it as a messy semicolon-delimited export")
    parser.add_argument("--decimal-comma", action="store_true", help="with --dirty: numbers as 1034,66")
    args = parser.parse_args()
    if args.decimal_comma and not args.dirty:
        parser.error("--decimal-comma needs --dirty")
    if args.dirty:
        write_dirty_export(args.out, args.rows, args.seed, args.decimal_comma)
        print(f"wrote {args.rows} rows to {args.out} as a semicolon-delimited export")
        return
    frame = generate_churn(args.rows, args.seed)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} rows to {args.out} ({(frame['churn'] == 'Yes').mean():.1%} churn)")


if __name__ == "__main__":
    main()
