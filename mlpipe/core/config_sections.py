"""Config sections for the data, its split and features, evaluation, promotion, tracking, caching
and compute: one pydantic model each, every one forbidding unknown keys (`Section`).

A Prefect-free kernel module; the model and tuning sections (checked against the estimator
families) are in mlpipe/core/config_model.py, the whole `PipelineConfig` and its YAML loading in
mlpipe/core/config.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key path and the fix."""


def form_type(prop: dict) -> None:
    """Prefect's run form has no input for a `null` type: an optional field whose default is None
    showed 'Property is type "None"'. Such a field is given its one other type and no default; left
    empty, it is omitted and stays None (and Prefect's parameter check still accepts null for it).
    A field's `json_schema_extra` (a flow parameter's too)."""
    kinds = prop.get("anyOf", [])
    if {"type": "null"} in kinds and len(kinds) == 2 and "default" in prop and prop["default"] is None:
        del prop["anyOf"], prop["default"]
        prop.update(next(kind for kind in kinds if kind != {"type": "null"}))


def _form_types(schema: dict, _model) -> None:
    for prop in schema.get("properties", {}).values():
        form_type(prop)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_form_types)


CSV_DELIMITERS = (",", ";", "\t", "|")  # what detection chooses from, in order of preference


class CsvConfig(Section):
    """How a CSV file is written, when detection is not enough. Detection reads the first lines:
    the delimiter (one of `,` `;` tab `|`) and a byte-order mark."""

    delimiter: str = Field("auto", description="auto (detect , ; tab |), or the one character; 'tab' for a tab")
    decimal: Literal[".", ","] = Field(".", description="',' for a decimal comma (then ';' is the usual delimiter)")
    encoding: str = Field("utf-8", description="Text encoding of the file, e.g. latin-1 or cp1252")

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, delimiter: str) -> str:
        delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
        if delimiter != "auto" and (len(delimiter) != 1 or delimiter in "\"\r\n"):
            raise ValueError(f"delimiter must be auto or one character such as ; or tab, got {delimiter!r}")
        return delimiter

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
        return encoding

    @model_validator(mode="after")
    def _delimiter_is_not_the_decimal(self) -> "CsvConfig":
        if self.delimiter == self.decimal:
            raise ValueError(f"delimiter and decimal are both {self.decimal!r}: with a decimal comma the "
                             "delimiter is usually ';'")
        return self


# What `data.na_values` defaults to: the spellings of "missing" that exports write and that no
# real value of a column would be. Left out on purpose: "None"/"none" (a plan or a discount
# called "None" is a real category), "-" (zero in accounting exports, a real code in some
# lists) and "0". A numeric column's own rare tokens are found anyway (`data.auto_na_share`).
DEFAULT_NA_VALUES = ("?", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "null", "NULL")


class DataConfig(Section):
    """Where the dataset lives and what its columns mean."""

    uri: str = Field("data/churn.csv", description="Local path, file:// or s3:// URI")
    format: Literal["auto", "csv", "parquet"] = Field("auto", description="auto: by extension")
    csv: CsvConfig = Field(default_factory=CsvConfig, description="CSV dialect; detected by default")
    target: str = Field("churn", description="Binary target column")
    positive_label: str | int | bool | None = Field(
        "Yes", description="Target value that means the positive class (None: target is 0/1)"
    )
    id_columns: list[str] = Field(default_factory=list, description="Never used as features")
    drop_columns: list[str] = Field(default_factory=list, description="Ignored entirely")
    required_features: list[str] = Field(default_factory=list, description="Must be present")
    min_rows: int = Field(200, ge=2, description="Fewer rows than this fail validation")
    leak_threshold: float = Field(
        0.995, gt=0.5, le=1, description="A column that alone separates the classes this well is refused as a leak"
    )
    id_unique_ratio: float = Field(
        1.0, gt=0, le=1, description="Text or integer columns with this share of unique values are IDs"
    )
    na_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NA_VALUES),
        description="Text read as missing in every column, in training and by the registered model (compared "
                    "stripped; blanks are always missing). Not 'None' or '-', which can be real values")
    auto_na_share: float = Field(
        0.01, ge=0, lt=0.5, description="A numeric column whose non-numeric values are at most this share of "
                                        "its rows, and at most 3 tokens without digits (e.g. 'unknown'), reads "
                                        "them as missing, with a warning; 0: refuse them")
    unlabeled_rows: Literal["drop", "fail"] = Field(
        "drop", description="Rows whose target is missing or unparseable: drop (at most max_unlabeled_share of "
                            "the rows, with a warning) or fail")
    max_unlabeled_share: float = Field(
        0.01, ge=0, lt=0.5, description="unlabeled_rows=drop: above this share of the rows, fail instead")


class SplitConfig(Section):
    """How the holdout is carved out of the data."""

    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the rows held out for evaluation and "
                                                               "the champion comparison")
    seed: int = Field(42, description="Seed of the random split; salt of the hash split")
    stratify: bool = Field(True, description="random split only: keep the class balance in both sides")
    time_column: str | None = Field(None, description="Holdout = latest rows by this column (overrides method)")
    method: Literal["hash", "random"] = Field(
        "hash", description="hash: a row's side is a hash of its ID columns (else its content), stable across "
                            "snapshots; random: seeded and stratified (not comparable across snapshots)")


class RatioFeature(Section):
    """numerator / denominator, missing where the denominator is 0 or missing."""

    name: str = Field(description="Name of the new column")
    numerator: str = Field(description="Numeric column divided")
    denominator: str = Field(description="Numeric column it is divided by")


class ChangeFeature(Section):
    """(previous - current) / previous: the share lost since `previous` (negative for growth),
    missing where `previous` is 0 or missing."""

    name: str = Field(description="Name of the new column")
    previous: str = Field(description="Numeric column with the earlier value")
    current: str = Field(description="Numeric column with the later value")


class BucketFeature(Section):
    """A numeric column cut at fixed edges into one-hot encoded buckets."""

    name: str = Field(description="Name of the new column")
    column: str = Field(description="Numeric column cut into buckets")
    edges: list[float] = Field(min_length=1, description="Strictly increasing cut points; n edges make n + 1 buckets")

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"edges must be strictly increasing, got {edges}")
        return edges


class FeaturesConfig(Section):
    """How raw columns become model inputs."""

    numeric_impute: Literal["median", "mean"] = Field(
        "median", description="What a gap in a numeric column is filled with (from the train rows)")
    scale_numeric: bool = Field(True, description="Standardize numeric columns (mean 0, variance 1)")
    max_categories: int | None = Field(
        30, ge=2, description="Rarer categories are grouped into one 'infrequent' column"
    )
    min_category_frequency: float | None = Field(
        0.005, gt=0, lt=1,
        description="Categories seen in fewer than this share of the train rows join the 'infrequent' column",
    )
    missing_indicators: bool = Field(
        True, description="A 0/1 column per numeric column that has gaps in the train rows (linear models "
                          "cannot tell an imputed value from a real one otherwise)",
    )
    ratios: list[RatioFeature] = Field(default_factory=list, description="Derived columns numerator / denominator")
    changes: list[ChangeFeature] = Field(
        default_factory=list, description="Derived columns (previous - current) / previous")
    buckets: list[BucketFeature] = Field(default_factory=list, description="Numeric columns cut at fixed edges")


class ComputeConfig(Section):
    """Where the heavy steps run: in this process, or as Ray tasks (a local Ray, or the
    cluster at RAY_ADDRESS). Both give the same numbers."""

    backend: Literal["local", "ray"] = Field("local", description="ray: CV folds and permutation importance as Ray tasks")
    max_retries: int = Field(2, ge=0, description="Ray retries of a task whose worker or node died")
    threads: int | None = Field(
        None, ge=1, description="Threads each fit and predict may use in this process (OpenMP, BLAS); empty: the "
                                "cores free when the fit starts (the cores less the other threads the kernel runs "
                                "or queues then, at most cores / MLPIPE_PARALLEL_RUNS when a worker runs that many "
                                "flows at once; OMP_NUM_THREADS, when set, wins): HistGradientBoosting's OpenMP "
                                "threads spin against other busy processes and slow each fit several times over")
    stream: bool = Field(
        False, description="backend ray with model.family xgboost or lightgbm: read data.uri (a Parquet or CSV file, "
                           "local or s3://) into a Ray Dataset in blocks; validate, split, transform and score it "
                           "block by block on the cluster, and train on Ray Train over those blocks, so this process "
                           "never holds the table (a bounded sample fits the feature steps, a bounded sample of the "
                           "holdout serves the permutation importance; the champion comparison scores every "
                           "holdout row block by block)")
    stream_sample_rows: int = Field(
        100_000, ge=1000, description="compute.stream: rows of the stratified sample that fits the feature steps "
                                      "and decides the column roles (drawn by row key, the same rows every run)")
    ray_worker_cpus: float = Field(
        1.0, gt=0, description="CPUs each Ray Train worker reserves; below 1 leaves CPUs to the Ray Data tasks "
                               "that feed it on a cluster with about one CPU per worker")
    ray_data_cpus: float = Field(
        1.0, gt=0, description="compute.stream: CPUs each Ray Data task (a block read, mapped or scored) asks; "
                               "below 1 on nodes of one CPU, where Ray Train workers hold part of it")


class EvaluationConfig(Section):
    """How the model is scored."""

    cv_folds: int = Field(5, ge=2, description="Stratified folds of the cross-validation on the train split")
    permutation_repeats: int = Field(5, ge=1, description="Shuffles per column in the permutation importance")
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability cut for the label")
    cv_max_rows: int | None = Field(
        20_000, ge=100, description="Cross-validate (and compare model families) on a stratified sample of at "
                                    "most this many train rows (empty: all): above that, a larger sample changes "
                                    "neither the spread nor the ranking of families, only the cost")
    importance_max_rows: int | None = Field(
        10_000, ge=100, description="Permutation importance on a stratified sample of at most this many "
                                    "holdout rows (empty: all)")


class PromotionConfig(Section):
    """When a new model version becomes `champion`."""

    metric: Literal["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"] = Field(
        "roc_auc", description="Holdout metric of the gate and the champion comparison (lower is better for "
                               "log_loss and brier)")
    min_value: float = Field(0.75, description="Absolute gate (a maximum for log_loss/brier)")
    tolerance: float = Field(
        0.0, ge=0, description="How much worse than the champion, both scored on rows neither trained on"
    )
    min_comparison_rows: int = Field(
        100, ge=1, description="Fewest rows neither model trained on for a champion comparison to count")
    min_comparison_positives: int = Field(
        10, ge=1, description="Fewest positive (and negative) rows in that comparison set")
    when_incomparable: Literal["keep_champion", "promote_on_gate"] = Field(
        "keep_champion", description="When the comparison set is too small or the champion's training rows are "
                                     "unknown: keep the champion (candidate -> challenger), or promote a "
                                     "candidate that passes the absolute gate")


class TrackingConfig(Section):
    """MLflow experiment and registered model. The tracking URI comes from the environment."""

    experiment: str = Field("churn", description="MLflow experiment of the training runs")
    model_name: str = Field("churn-classifier", description="Registered model the versions belong to")


class CacheConfig(Section):
    """Where cached task results are persisted."""

    enabled: bool = Field(True, description="Persist the cached steps' results and reuse them on identical inputs")
    storage: str = Field(
        "data/.cache",
        description="Local folder, an s3:// prefix, or block:<type>/<name> for a saved Prefect storage block",
    )
