"""The `csv` task: each institution's own table, one file per participant.

Files are CSV or Parquet (chosen by extension: .csv, .parquet, .pq). The rules, all
applied per file so every error names the file it is about (and the line, row or column
where one is to blame):

- a CSV file is UTF-8 text with a header row of distinct, non-empty names, and every
  record has as many fields as the header (blank lines are skipped);
- the target column must be present; rows whose target is missing are dropped, and the
  count is logged and kept in `ParticipantData.dropped_rows`;
- features are the listed `features`, or every other column; without a list, every file
  must have the same columns as the first (order may differ);
- features must be numeric (or boolean): encode text columns as numbers or leave them
  out via `features`; missing feature values are imputed with the federated mean of the
  training splits (see `normalization`), then everything is standardized federatedly;
- the target is a class label, text or integer; the label vocabulary is the sorted union
  of every participant's target values, so class indices agree across participants.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.data.normalization import FeatureStatistics, standardize_federated
from fl_chain.data.preprocessing import SharedPreprocessing, TableSummary
from fl_chain.data.split import MIN_ROWS, split_participant
from fl_chain.errors import DataError, UsageError

TASK = "csv"
SHOWN_COLUMNS = 12  # a message lists at most this many of a file's columns

log = logging.getLogger(__name__)


def load_tables(
    paths: Sequence[str | Path],
    *,
    target: str,
    features: Sequence[str] | None = None,
    seed: int,
    test_fraction: float = 0.2,
) -> FederatedDataset:
    """One participant per file, in the order given, each with a local train/test split."""
    if not paths:
        raise UsageError("the csv task needs at least one participant file")
    files = [Path(path) for path in paths]
    tables = [_read(path) for path in files]
    for path, table in zip(files, tables):
        if target not in table.columns:
            raise DataError(f"{path} has no target column {target!r} (its columns: {_names(table.columns)})")
    feature_names = _feature_names(files, tables, target, features)
    labelled = [_drop_unlabelled(path, table, target) for path, table in zip(files, tables)]
    features_x = [_features(path, table, feature_names) for path, table in zip(files, labelled)]
    labels = _class_labels(files, [table[target] for table in labelled], target)
    vocabulary = np.unique(np.concatenate(labels))
    if len(vocabulary) < 2:
        raise DataError(
            f"target column {target!r} has the values {vocabulary.tolist()} across all files; "
            "a classifier needs at least two classes"
        )
    participants = [
        split_participant(
            str(path),
            x,
            np.searchsorted(vocabulary, y),
            index=index,
            test_fraction=test_fraction,
            seed=seed,
            dropped_rows=len(raw) - len(table),
        )
        for index, (path, raw, table, x, y) in enumerate(
            zip(files, tables, labelled, features_x, labels)
        )
    ]
    return FederatedDataset(
        task=TASK,
        participants=tuple(standardize_federated(participants, feature_names)),
        num_classes=len(vocabulary),
        input_shape=(len(feature_names),),
        feature_names=feature_names,
        class_names=tuple(str(label) for label in vocabulary),
    )


def summarize_table(path: str | Path, *, target: str, seed: int, index: int, test_fraction: float) -> TableSummary:
    """What a deployed organization shares of its own table (see `preprocessing`); `index`
    seeds its train/test split (its member index), as a file's position does in a simulation."""
    participant, feature_names, labels = _own_table(Path(path), target, seed, index, test_fraction, None)
    as_json = [label.item() for label in labels]  # numpy scalars -> int or str
    return TableSummary(feature_names, tuple(as_json), FeatureStatistics.of(participant.train_x))


def load_own_table(path: str | Path, *, target: str, seed: int, index: int, test_fraction: float,
                   shared: SharedPreprocessing) -> ParticipantData:
    """A deployed organization's table, encoded and standardized as every site agreed."""
    participant, _, labels = _own_table(Path(path), target, seed, index, test_fraction, shared)
    unknown = sorted(set(labels.tolist()) - set(shared.classes))
    if unknown:
        raise DataError(f"{path} holds labels {unknown} that the consortium's tables do not")
    standardize = shared.standardization.apply
    return replace(participant, train_x=standardize(participant.train_x), test_x=standardize(participant.test_x))


def _own_table(path: Path, target: str, seed: int, index: int, test_fraction: float,
               shared: SharedPreprocessing | None) -> tuple[ParticipantData, tuple[str, ...], np.ndarray]:
    """One file's split (features unscaled), its feature names and its label values.

    Labels are encoded with the shared vocabulary when there is one, else the file's own:
    either order is the same, so the seeded, stratified split is the same too."""
    table = _read(path)
    if target not in table.columns:
        raise DataError(f"{path} has no target column {target!r} (its columns: {_names(table.columns)})")
    feature_names = _feature_names([path], [table], target, shared.feature_names if shared else None)
    labelled = _drop_unlabelled(path, table, target)
    x = _features(path, labelled, feature_names)
    (y,) = _class_labels([path], [labelled[target]], target)
    labels = np.unique(y)
    vocabulary = np.asarray(shared.classes) if shared else labels
    participant = split_participant(str(path), x, np.searchsorted(vocabulary, y), index=index,
                                    test_fraction=test_fraction, seed=seed, dropped_rows=len(table) - len(labelled))
    return participant, feature_names, labels


def _read(path: Path) -> pd.DataFrame:
    """The file's table, rows numbered from 0 in file order."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type; use one of {sorted(READERS)}")
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")
    try:
        table = reader(path)
    except PermissionError:
        raise DataError(f"{path} is not readable (permission denied)") from None
    except (OSError, ValueError) as exc:  # pandas and pyarrow parse errors are ValueErrors
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    duplicated = sorted({str(c) for c in table.columns[table.columns.duplicated()]})
    if duplicated:
        raise DataError(f"{path} has duplicated columns {duplicated}")
    return table.rename(columns=str).reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    """Checks the file's text and shape with the csv module first: pandas would silently
    rename duplicated columns and pad short records, and names neither line nor byte."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                        "save it as a UTF-8 CSV file") from None
    records = csv.reader(io.StringIO(text))
    try:
        header = next((record for record in records if any(field.strip() for field in record)), None)
        if header is None:
            raise DataError(f"{path} is empty: a CSV file needs a header row and data rows")
        unnamed = [index + 1 for index, name in enumerate(header) if not name.strip()]
        if unnamed:
            raise DataError(f"{path}: column {unnamed[0]} of the header row has no name")
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise DataError(f"{path} has duplicated columns {duplicated}")
        for record in records:
            if any(field.strip() for field in record) and len(record) != len(header):
                raise DataError(f"{path}: line {records.line_num} has {len(record)} field(s), "
                                f"the header has {len(header)}")
    except csv.Error as exc:
        raise DataError(f"{path}: line {records.line_num}: {exc}") from None
    return pd.read_csv(io.StringIO(text))


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet,
}


def _names(columns: Sequence[str]) -> str:
    shown = ", ".join(str(name) for name in list(columns)[:SHOWN_COLUMNS])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > SHOWN_COLUMNS else "")


def _feature_names(
    files: list[Path], tables: list[pd.DataFrame], target: str, features: Sequence[str] | None
) -> tuple[str, ...]:
    """The listed features (each file must have them), or the first file's other columns."""
    if features is not None:
        chosen = tuple(features)
        if not chosen:
            raise UsageError("`features` is empty; list at least one column or omit it")
        if target in chosen:
            raise UsageError(f"the target column {target!r} cannot also be a feature")
        if len(set(chosen)) != len(chosen):
            raise UsageError(f"`features` lists a column twice: {list(chosen)}")
        for path, table in zip(files, tables):
            missing = [name for name in chosen if name not in table.columns]
            if missing:
                raise DataError(f"{path} lacks feature column(s) {missing}")
        return chosen
    expected = set(tables[0].columns)
    for path, table in zip(files[1:], tables[1:]):
        missing, extra = sorted(expected - set(table.columns)), sorted(set(table.columns) - expected)
        if missing or extra:
            raise DataError(
                f"{path} has different columns from {files[0]}: missing {missing}, extra {extra}"
                " (pass `features` to use only the shared ones)"
            )
    chosen = tuple(name for name in tables[0].columns if name != target)
    if not chosen:
        raise DataError(f"{files[0]} has no column besides the target {target!r}")
    return chosen


def _drop_unlabelled(path: Path, table: pd.DataFrame, target: str) -> pd.DataFrame:
    labelled = table[table[target].notna()]
    dropped = len(table) - len(labelled)
    if dropped:
        log.warning("%s: dropped %d of %d rows with no value in target column %r",
                    path, dropped, len(table), target)
    if len(labelled) < MIN_ROWS:
        raise DataError(
            f"{path} has {len(labelled)} rows with a value in target column {target!r}; "
            f"a participant needs at least {MIN_ROWS} (one to train on, one to test on)"
        )
    return labelled


def _features(path: Path, table: pd.DataFrame, feature_names: tuple[str, ...]) -> np.ndarray:
    """The feature matrix (float64, NaN where missing), refusing text and infinities."""
    for name in feature_names:
        column = table[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            raise DataError(
                f"{path}: feature column {name!r} is not numeric ({_first_text_cell(column)}); "
                "encode it as numbers or leave it out via `features`"
            )
    x = table[list(feature_names)].to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = [name for name, bad in zip(feature_names, np.isinf(x).any(axis=0)) if bad]
    if infinite:
        raise DataError(f"{path}: feature column(s) {infinite} hold infinite values")
    return x


def _first_text_cell(column: pd.Series) -> str:
    """Where a column stops being numeric: its first present value that is not a number."""
    text = column.notna() & pd.to_numeric(column, errors="coerce").isna()
    if not text.any():
        return str(column.dtype)
    row = text.idxmax()
    return f"data row {row + 1} holds {column[row]!r}"


def _class_labels(files: list[Path], targets: list[pd.Series], target: str) -> list[np.ndarray]:
    """Each file's target values as integers, or else as text, comparable across files."""
    numeric = [pd.api.types.is_numeric_dtype(values) for values in targets]
    if any(numeric) and not all(numeric):
        numbers, text = files[numeric.index(True)], files[numeric.index(False)]
        raise DataError(
            f"target column {target!r} holds numbers in {numbers} but text in {text}; "
            "use the same labels everywhere"
        )
    if not all(numeric):
        return [values.astype(str).to_numpy(dtype=np.str_) for values in targets]
    labels = []
    for path, values in zip(files, targets):
        as_float = values.to_numpy(dtype=np.float64)
        if not np.array_equal(as_float, np.round(as_float)):
            raise DataError(
                f"{path}: target column {target!r} holds non-integer numbers; "
                "fl-chain trains classifiers, so the target must be class labels"
            )
        labels.append(as_float.astype(np.int64))
    return labels
