"""A table read in blocks (a Ray Dataset's batches): what the data contract, the hash split and
the stratified sample need from each block, as pure functions of one pandas block and of
statistics merged over all blocks. Nothing here sees the whole table, and nothing imports Ray:
`mlpipe/adapters/ray_data.py` maps these functions over the blocks.

The rules are validation's and the split's own (`validation.read_tokens`, `splitting.row_keys`,
`splitting.hash_holdout_side`), so a row read in blocks gets the key and side it gets when the
whole table is read at once. Content keys number identical rows across the table: a block
computes the keys without the numbers (`BASE_KEY`), and the rows whose key occurs more than once
in the table are numbered together (`number_copies`), wherever they were read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlpipe.core.config import DataConfig
from mlpipe.core.errors import DataValidationError, name_list
from mlpipe.data.splitting import hash_holdout_side, key_uniform, numbered_keys, row_keys
from mlpipe.data.validation import read_tokens

BASE_KEY = "__base_key__"  # the content key before copy numbers (uint64)
KEY = "__row_key__"  # the row's split key, as `row_keys` gives it (uint64)
LABEL = "__y__"  # the target as 0/1 (int64)
HOLDOUT = "__holdout__"  # the row's side of the hash split (bool)
STATISTICS = "statistics"  # the one column of a block's statistics row (JSON)
MISSING_LABEL = "\x00missing"  # a missing target, among the label counts


@dataclass
class BlockStatistics:
    """What validation needs to know of the whole table, summed block by block: rows, the
    columns, each column's missing values (data.na_values tokens read as missing), the tokens
    found, and the target's values (stripped text, `MISSING_LABEL` for missing) with their rows."""

    rows: int = 0
    columns: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def merge(self, other: "BlockStatistics") -> "BlockStatistics":
        if self.columns and other.columns and other.columns != self.columns:
            raise DataValidationError(f"the blocks of the table have different columns: {name_list(self.columns)} "
                                      f"and {name_list(other.columns)}")
        tokens = {c: dict(t) for c, t in self.tokens.items()}
        for column, found in other.tokens.items():
            for token, count in found.items():
                tokens.setdefault(column, {})[token] = tokens.get(column, {}).get(token, 0) + count
        return BlockStatistics(self.rows + other.rows, self.columns or other.columns, _add(self.missing, other.missing),
                               tokens, _add(self.labels, other.labels))

    def missing_share(self) -> dict[str, float]:
        return {c: (self.missing.get(c, 0) / self.rows if self.rows else 0.0) for c in self.columns}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def block_statistics(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """One block's `BlockStatistics`, as a one-row frame (column `STATISTICS`, JSON)."""
    frame, tokens = read_tokens(frame, config)
    labels: dict[str, int] = {}
    if config.target in frame.columns:
        text = frame[config.target].astype("string").str.strip().fillna(MISSING_LABEL)
        labels = {str(k): int(v) for k, v in text.value_counts().items()}
    stats = BlockStatistics(len(frame), [str(c) for c in frame.columns],
                            {str(c): int(n) for c, n in frame.isna().sum().items()}, tokens, labels)
    return pd.DataFrame({STATISTICS: [json.dumps(asdict(stats))]})


def merge_statistics(rows: list[str]) -> BlockStatistics:
    """The table's statistics from its blocks' (`block_statistics`' JSON texts)."""
    total = BlockStatistics()
    for text in rows:
        total = total.merge(BlockStatistics(**json.loads(text)))
    return total


@dataclass(frozen=True)
class LabelRule:
    """How the target's values map to 0/1 over the whole table: `positive` None means a 0/1
    target (numbers); else the positive label and the commonest other one (`map_target`'s rule)."""

    positive: str | None
    negative: str | None
    unlabeled: int  # rows whose target is missing or neither class: dropped
    class_rows: tuple[int, int]  # rows of class 0 and class 1


def check_table(stats: BlockStatistics, config: DataConfig) -> None:
    """`validate_dataset`'s checks of the table's shape, on the merged statistics: rows,
    duplicate columns, the target and the required features present, data.min_rows, and no
    column empty in every block (the sample alone could not tell)."""
    if not stats.columns or not stats.rows:
        raise DataValidationError("the dataset is empty (no rows)" if stats.columns else "the dataset is empty")
    duplicated = sorted({c for c in stats.columns if stats.columns.count(c) > 1})
    if duplicated:
        raise DataValidationError(f"duplicate column names {name_list(duplicated)}", duplicated[0])
    if config.target not in stats.columns:
        raise DataValidationError(f"target column {config.target!r} is missing (columns: {name_list(stats.columns)})",
                                  config.target)
    absent = [c for c in config.required_features if c not in stats.columns]
    if absent:
        raise DataValidationError(f"required feature {absent[0]!r} is missing from the dataset", absent[0])
    if stats.rows < config.min_rows:
        raise DataValidationError(f"the dataset has {stats.rows} rows, fewer than data.min_rows={config.min_rows}")
    empty = [c for c in stats.columns if c != config.target and c not in config.drop_columns
             and stats.missing.get(c, 0) == stats.rows]
    if empty:
        raise DataValidationError(f"column {empty[0]!r} is entirely empty: fix the extract or add it to "
                                  "data.drop_columns", empty[0])


def label_rule(stats: BlockStatistics, config: DataConfig, min_class_rows: int) -> tuple[LabelRule, list[str]]:
    """The 0/1 mapping of the target over the whole table, and the warnings it gives; refuses a
    single class, too many unlabeled rows (data.unlabeled_rows, data.max_unlabeled_share) and a
    rarer class under `min_class_rows` rows, as validation does."""
    target = config.target
    present = {label: n for label, n in stats.labels.items() if label != MISSING_LABEL}
    if len(present) < 2:
        raise DataValidationError(f"target {target!r} has a single class ({next(iter(present), None)!r}); "
                                  "a classifier needs two", target)
    if config.positive_label is None:
        numbers = pd.to_numeric(pd.Series(list(present), dtype="string"), errors="coerce")
        counts = [sum(n for (label, n), v in zip(present.items(), numbers) if v == value) for value in (0, 1)]
        rule = LabelRule(None, None, stats.rows - sum(counts), (counts[0], counts[1]))
    else:
        positive = str(config.positive_label).strip()
        if positive not in present:
            raise DataValidationError(f"target {target!r} never takes the positive label {positive!r} (values: "
                                      f"{sorted(present)[:5]}); set data.positive_label", target)
        others = sorted(((n, label) for label, n in present.items() if label != positive), key=lambda x: -x[0])
        if not others:
            raise DataValidationError(f"target {target!r} has a single class ({positive!r})", target)
        negative = others[0][1]
        rule = LabelRule(positive, negative, stats.rows - present[positive] - present[negative],
                         (present[negative], present[positive]))
    return rule, _unlabeled_warnings(rule, stats, config, min_class_rows)


def _unlabeled_warnings(rule: LabelRule, stats: BlockStatistics, config: DataConfig, min_class_rows: int) -> list[str]:
    target, warnings = config.target, []
    if rule.unlabeled:
        share = rule.unlabeled / stats.rows
        if config.unlabeled_rows == "fail" or share > config.max_unlabeled_share:
            why = ("data.unlabeled_rows is fail" if config.unlabeled_rows == "fail" else
                   f"more than data.max_unlabeled_share={config.max_unlabeled_share:g} of the rows")
            raise DataValidationError(f"target {target!r} leaves {rule.unlabeled} rows ({share:.1%}) unlabeled; "
                                      f"{why}: label them, fix the export, or set data.positive_label / "
                                      "data.na_values", target)
        warnings.append(f"target {target!r}: dropped {rule.unlabeled} unlabeled row(s) "
                        f"({stats.labels.get(MISSING_LABEL, 0)} missing); data.unlabeled_rows=fail refuses them "
                        "instead")
    if min(rule.class_rows) < min_class_rows:
        raise DataValidationError(f"target {target!r}: the rarer class has {min(rule.class_rows)} rows, fewer than "
                                  f"the {min_class_rows} that cross-validation folds and the holdout need", target)
    return warnings


def keyed_block(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """A block with its tokens read as missing and its row keys: `KEY` when keyed on
    data.id_columns, else `BASE_KEY` (the content key; its copy number comes later)."""
    frame, _ = read_tokens(frame, config)
    key_columns = [c for c in config.id_columns if c in frame.columns]
    keys = row_keys(frame, key_columns, number_copies=False).to_numpy()
    return frame.assign(**{KEY if key_columns else BASE_KEY: keys})


def unique_content_keys(frame: pd.DataFrame, repeated: np.ndarray) -> pd.DataFrame:
    """The rows of a keyed block whose content key occurs once in the table (`repeated`: the
    sorted keys that occur more than once): their key is the content key itself."""
    single = ~np.isin(frame[BASE_KEY].to_numpy(), repeated, assume_unique=False)
    return frame[single].assign(**{KEY: frame[BASE_KEY].to_numpy()[single]}).drop(columns=[BASE_KEY])


def repeated_content_keys(frame: pd.DataFrame, repeated: np.ndarray) -> pd.DataFrame:
    """The rows of a keyed block whose content key occurs more than once in the table."""
    return frame[np.isin(frame[BASE_KEY].to_numpy(), repeated)]


def number_copies(group: pd.DataFrame) -> pd.DataFrame:
    """All the rows of the table with one content key (identical rows, by `row_keys`' meaning
    of a value): numbered 0..n-1, the keys `row_keys` gives n copies. Which copy gets which
    number cannot change a side: the rows are the same."""
    keys = numbered_keys(group[BASE_KEY].to_numpy(), np.arange(len(group)))
    return group.assign(**{KEY: keys}).drop(columns=[BASE_KEY])


def map_labels(values: pd.Series, rule: LabelRule) -> np.ndarray:
    """The target as 0/1, -1 where it is missing or neither class (`LabelRule`)."""
    if rule.positive is None:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return np.where(numbers == 1, 1, np.where(numbers == 0, 0, -1)).astype("int64")
    text = values.astype("string").str.strip()
    positive = (text == rule.positive).to_numpy(dtype=bool, na_value=False)
    negative = (text == rule.negative).to_numpy(dtype=bool, na_value=False)
    return np.where(positive, 1, np.where(negative, 0, -1)).astype("int64")


def split_block(frame: pd.DataFrame, target: str, rule: LabelRule, holdout_fraction: float,
                seed: int) -> pd.DataFrame:
    """A block with its final keys: the target as 0/1 (`LABEL`), unlabeled rows dropped, and
    each row's side of the hash split (`HOLDOUT`), `hash_holdout_side` of its key."""
    labels = map_labels(frame[target], rule)
    kept = frame[labels >= 0]
    return kept.assign(**{LABEL: labels[labels >= 0],
                          HOLDOUT: hash_holdout_side(kept[KEY].to_numpy(), holdout_fraction, seed)})


def side_rows(frame: pd.DataFrame, holdout: bool) -> pd.DataFrame:
    """The block's holdout rows (or its train rows)."""
    return frame[frame[HOLDOUT].to_numpy() == holdout]


def sample_rows(frame: pd.DataFrame, share: float, salt: str, inside: bool = True) -> pd.DataFrame:
    """The block's rows drawn into a sample (`inside`; else the rest): those whose key's
    `key_uniform` with `salt` is below `share`. A pure function of the row, so the sample is
    the same however the table is cut into blocks; each class keeps its share of the rows (in
    expectation), and the size is about `share` times the rows."""
    return frame[(key_uniform(frame[KEY].to_numpy(), salt) < share) == inside]


def sample_share(rows: int, max_rows: int) -> float:
    """The share of `rows` rows to draw for a sample of about `max_rows` rows."""
    return min(1.0, max_rows / rows) if rows else 1.0
