"""Data loading, partitioning, federated normalization and the csv task's rules."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from fl_chain.data.builtin import load_builtin
from fl_chain.data.normalization import FeatureStatistics, Standardization
from fl_chain.data.partition import Partitioning, partition
from fl_chain.data.plots import plot_label_distribution
from fl_chain.data.split import split_participant
from fl_chain.data.tables import load_tables
from fl_chain.errors import DataError, UsageError

BREAST_CANCER_ROWS = 569
DIGITS_ROWS = 1797


def rows_of(dataset) -> int:
    return sum(len(p.train_y) + len(p.test_y) for p in dataset.participants)


# ---------------------------------------------------------------- partitioning


@pytest.mark.parametrize(
    "partitioning",
    [
        Partitioning("iid"),
        Partitioning("dirichlet", alpha=0.5),
        Partitioning("pathological", classes_per_participant=1),
    ],
    ids=["iid", "dirichlet", "pathological"],
)
def test_every_row_goes_to_exactly_one_participant(partitioning: Partitioning) -> None:
    labels = load_breast_cancer().target
    shares = partition(labels, 5, partitioning, seed=3)
    assert len(shares) == 5
    assert np.array_equal(np.sort(np.concatenate(shares)), np.arange(len(labels)))
    dataset = load_builtin("breast_cancer", num_participants=5, partitioning=partitioning, seed=3)
    assert rows_of(dataset) == BREAST_CANCER_ROWS


def test_iid_shares_are_equal_sized_and_seeded() -> None:
    labels = np.repeat([0, 1], 50)
    shares = partition(labels, 4, Partitioning("iid"), seed=0)
    assert [len(share) for share in shares] == [25, 25, 25, 25]
    # the rows are shuffled first, so a share is not a contiguous run of one class
    assert all(0 < labels[share].sum() < 25 for share in shares)
    again = partition(labels, 4, Partitioning("iid"), seed=0)
    other = partition(labels, 4, Partitioning("iid"), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(shares, again))
    assert not all(np.array_equal(a, b) for a, b in zip(shares, other))


def test_dirichlet_is_skewed_but_respects_the_minimum_size() -> None:
    labels = load_breast_cancer().target
    shares = partition(labels, 5, Partitioning("dirichlet", alpha=0.3, min_partition_size=25), seed=0)
    assert min(len(share) for share in shares) >= 25
    malignant_fraction = [labels[share].mean() for share in shares]
    assert max(malignant_fraction) - min(malignant_fraction) > 0.3  # iid would be ~0.05


def test_dirichlet_that_cannot_be_satisfied_is_a_data_error() -> None:
    labels = load_breast_cancer().target
    with pytest.raises(DataError, match="dirichlet partitioning of 569 rows across 5 participants failed"):
        partition(labels, 5, Partitioning("dirichlet", alpha=0.5, min_partition_size=200), seed=0)


def test_pathological_participants_see_only_their_classes() -> None:
    two_classes = Partitioning("pathological", classes_per_participant=2)
    dataset = load_builtin("digits", num_participants=10, partitioning=two_classes, seed=1)
    classes_seen = (dataset.label_counts() > 0).sum(axis=1)
    assert classes_seen.tolist() == [2] * 10
    assert rows_of(dataset) == DIGITS_ROWS


def test_pathological_with_too_few_slots_logs_the_rows_left_out(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.repeat(np.arange(10), 10)
    with caplog.at_level(logging.WARNING, logger="fl_chain.data.partition"):
        shares = partition(labels, 2, Partitioning("pathological", classes_per_participant=2), seed=0)
    assert sum(len(share) for share in shares) == 40
    assert "leaves out 60 rows" in caplog.text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scheme": "shards"}, "unknown partitioning 'shards'"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be positive"),
        ({"scheme": "pathological", "classes_per_participant": 0}, "classes_per_participant"),
        ({"scheme": "dirichlet", "min_partition_size": 1}, "min_partition_size must be at least 2"),
    ],
)
def test_bad_partitioning_settings_are_usage_errors(arguments: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Partitioning(**arguments)


def test_more_participants_than_rows_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="num_participants must be between 1 and the 3 rows"):
        partition(np.array([0, 1, 0]), 4, Partitioning("iid"), seed=0)


# ---------------------------------------------------------------- built-in tasks


def test_loading_is_deterministic_in_the_seed() -> None:
    settings = {"num_participants": 5, "partitioning": Partitioning("dirichlet", alpha=0.5)}
    first = load_builtin("breast_cancer", seed=7, **settings)
    again = load_builtin("breast_cancer", seed=7, **settings)
    other = load_builtin("breast_cancer", seed=8, **settings)
    for a, b in zip(first.participants, again.participants):
        for field in ("train_x", "train_y", "test_x", "test_y"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
    assert [p.examples for p in first.participants] != [p.examples for p in other.participants]


def test_breast_cancer_is_standardized_with_statistics_of_all_train_splits() -> None:
    dataset = load_builtin("breast_cancer", num_participants=4, partitioning=Partitioning("iid"), seed=0)
    assert dataset.input_shape == (30,) and dataset.num_classes == 2
    assert dataset.class_names == ("malignant", "benign")
    pooled = dataset.pooled()
    assert pooled.train_x.dtype == np.float32 and pooled.train_y.dtype == np.int64
    # standardized jointly: the pooled train splits have mean 0 and std 1, one split alone does not
    np.testing.assert_allclose(pooled.train_x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled.train_x.std(axis=0), 1.0, atol=1e-5)
    assert np.abs(dataset.participants[0].train_x.mean(axis=0)).max() > 0.05


def test_digits_are_images_scaled_by_their_fixed_range() -> None:
    dataset = load_builtin("digits", num_participants=3, partitioning=Partitioning("iid"), seed=0)
    participant = dataset.participants[0]
    assert dataset.input_shape == (1, 8, 8) and dataset.num_classes == 10
    assert participant.train_x.shape[1:] == (1, 8, 8) and participant.train_x.dtype == np.float32
    pooled = dataset.pooled()
    assert pooled.train_x.min() == 0.0 and pooled.train_x.max() == 1.0
    assert rows_of(dataset) == DIGITS_ROWS


def test_unknown_builtin_task_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown built-in task 'mnist'"):
        load_builtin("mnist", num_participants=2, partitioning=Partitioning(), seed=0)


# ---------------------------------------------------------------- normalization and split


def test_federated_statistics_equal_pooled_statistics() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=50.0, scale=7.0, size=(rows, 4)) for rows in (3, 40, 17)]
    parts[1][5, 2] = np.nan
    parts[2][0, 0] = np.nan
    shared = Standardization.combine([FeatureStatistics.of(p) for p in parts], ["a", "b", "c", "d"])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(shared.mean, np.nanmean(pooled, axis=0), rtol=1e-12)
    np.testing.assert_allclose(shared.std, np.nanstd(pooled, axis=0), rtol=1e-9)
    scaled = shared.apply(pooled)
    assert not np.isnan(scaled).any() and scaled.dtype == np.float32
    assert scaled[5 + 3, 2] == 0.0  # a missing value becomes the mean


def test_constant_and_unobserved_features() -> None:
    constant = np.array([[2.0, np.nan], [2.0, np.nan]])
    with pytest.raises(DataError, match=r"feature\(s\) \['empty'\]"):
        Standardization.combine([FeatureStatistics.of(constant)], ["flat", "empty"])
    shared = Standardization.combine([FeatureStatistics.of(constant[:, :1])], ["flat"])
    assert shared.std.tolist() == [1.0] and shared.apply(constant[:, :1]).tolist() == [[0.0], [0.0]]


def test_local_split_is_stratified_when_possible() -> None:
    y = np.array([0] * 30 + [1] * 10)
    x = np.arange(40, dtype=np.float64).reshape(40, 1)
    data = split_participant("p", x, y, index=0, test_fraction=0.2, seed=0)
    assert len(data.test_y) == 8 and np.bincount(data.test_y).tolist() == [6, 2]
    assert sorted(np.concatenate([data.train_x, data.test_x]).ravel().tolist()) == list(range(40))
    # one row of class 1: no stratified split exists, a plain one is made
    fallback = split_participant("p", x[:11], np.array([0] * 10 + [1]), index=0, test_fraction=0.2, seed=0)
    assert len(fallback.train_y) + len(fallback.test_y) == 11
    with pytest.raises(DataError, match="p has 1 usable rows"):
        split_participant("p", x[:1], y[:1], index=0, test_fraction=0.2, seed=0)


# ---------------------------------------------------------------- csv task


def write(path: Path, table: pd.DataFrame) -> Path:
    if path.suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, index=False)
    return path


def hospital(rows: int, seed: int, labels: tuple[str, ...] = ("healthy", "sick")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(20, 90, rows).astype(float),
            "pressure": rng.normal(120, 15, rows),
            "diagnosis": rng.choice(labels, rows),
        }
    )


def test_csv_and_parquet_participants(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = hospital(30, 0)
    first.loc[3, "diagnosis"] = None
    first.loc[4, "pressure"] = np.nan
    second = hospital(25, 1, labels=("healthy", "sick", "critical"))[["diagnosis", "pressure", "age"]]
    paths = [write(tmp_path / "a.csv", first), write(tmp_path / "b.parquet", second)]
    with caplog.at_level(logging.WARNING, logger="fl_chain.data.tables"):
        dataset = load_tables(paths, target="diagnosis", seed=0)
    assert "a.csv: dropped 1 of 30 rows" in caplog.text
    assert dataset.task == "csv" and dataset.feature_names == ("age", "pressure")
    assert dataset.class_names == ("critical", "healthy", "sick")
    assert dataset.input_shape == (2,) and dataset.num_classes == 3
    a, b = dataset.participants
    assert (a.name, a.dropped_rows, b.dropped_rows) == (str(paths[0]), 1, 0)
    assert len(a.train_y) + len(a.test_y) == 29 and len(b.train_y) + len(b.test_y) == 25
    counts = dataset.label_counts()
    assert counts[0].tolist() == [0, *(first["diagnosis"].value_counts().sort_index().tolist())]
    assert counts[1].sum() == 25 and counts[1, 0] == (second["diagnosis"] == "critical").sum()
    pooled = dataset.pooled()
    assert not np.isnan(pooled.train_x).any() and not np.isnan(pooled.test_x).any()
    np.testing.assert_allclose(pooled.train_x.mean(axis=0), 0.0, atol=1e-5)


def test_csv_with_listed_features_and_integer_target(tmp_path: Path) -> None:
    table = pd.DataFrame({"x": np.arange(20.0), "note": ["n"] * 20, "y": [0, 2] * 10})
    other = table.assign(extra=1.0)
    paths = [write(tmp_path / "a.csv", table), write(tmp_path / "b.csv", other)]
    dataset = load_tables(paths, target="y", features=["x"], seed=0)
    assert dataset.feature_names == ("x",) and dataset.class_names == ("0", "2")
    assert set(np.concatenate([p.train_y for p in dataset.participants]).tolist()) == {0, 1}


def test_csv_without_target_column_names_the_file(tmp_path: Path) -> None:
    good = write(tmp_path / "a.csv", hospital(10, 0))
    bad = write(tmp_path / "b.csv", hospital(10, 1).drop(columns="diagnosis"))
    with pytest.raises(DataError, match=r"b\.csv has no target column 'diagnosis'"):
        load_tables([good, bad], target="diagnosis", seed=0)


def test_csv_text_feature_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", hospital(10, 0).assign(ward=["east", "west"] * 5))
    not_numeric = r"a\.csv: feature column 'ward' is not numeric.*encode it.*`features`"
    with pytest.raises(DataError, match=not_numeric):
        load_tables([path], target="diagnosis", seed=0)


def test_csv_differing_columns_name_the_file_and_columns(tmp_path: Path) -> None:
    good = write(tmp_path / "a.csv", hospital(10, 0))
    bad = write(tmp_path / "b.csv", hospital(10, 1).drop(columns="age").assign(weight=70.0))
    differ = r"b\.csv has different columns from .*a\.csv: missing \['age'\], extra \['weight'\]"
    with pytest.raises(DataError, match=differ):
        load_tables([good, bad], target="diagnosis", seed=0)
    with pytest.raises(DataError, match=r"b\.csv lacks feature column\(s\) \['age'\]"):
        load_tables([good, bad], target="diagnosis", features=["age", "pressure"], seed=0)


def test_csv_unreadable_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "gone.csv"
    with pytest.raises(DataError, match=r"gone\.csv does not exist"):
        load_tables([missing], target="diagnosis", seed=0)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match=r"folder\.csv is a directory, not a data file"):
        load_tables([tmp_path / "folder.csv"], target="diagnosis", seed=0)
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*broken\.parquet"):
        load_tables([garbage], target="diagnosis", seed=0)
    spreadsheet = tmp_path / "data.xlsx"
    spreadsheet.write_bytes(b"")
    with pytest.raises(DataError, match=r"data\.xlsx: unsupported file type"):
        load_tables([spreadsheet], target="diagnosis", seed=0)


def test_csv_file_the_system_refuses_to_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = write(tmp_path / "locked.csv", hospital(10, 0))

    def refuse(path: Path) -> bytes:  # what open() raises for a file without read permission (not for root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DataError, match=r"locked\.csv is not readable \(permission denied\)"):
        load_tables([locked], target="diagnosis", seed=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r" is empty: a CSV file needs a header row and data rows"),
        (b"\n\n", r" is empty"),
        (b"x,y\n1,a\n\x89PNG\n", r" is not UTF-8 text \(byte 0x89 on line 3\)"),
        (b"x,y\n1,a\n2,b,7\n", r": line 3 has 3 field\(s\), the header has 2"),
        (b"x,y,z\n1,2,a\n\n3,b\n", r": line 4 has 2 field\(s\), the header has 3"),
        (b"x,x,y\n1,2,a\n", r" has duplicated columns \['x'\]"),
        (b"x,,y\n1,2,a\n", r": column 2 of the header row has no name"),
        (b"x,y\n1,a\n2,b\nn/a?,a\n", r": feature column 'x' is not numeric \(data row 3 holds 'n/a\?'\)"),
        (b"1.5,0.2,a\n3.1,0.4,b\n", r" has no target column 'y' \(its columns: 1\.5, 0\.2, a\)"),
    ],
    ids=["empty", "blank-lines", "not-utf8", "long-row", "short-row", "duplicated", "unnamed", "text-cell",
         "no-header"],
)
def test_malformed_csv_names_file_and_place(tmp_path: Path, content: bytes, message: str) -> None:
    good = write(tmp_path / "a.csv", pd.DataFrame({"x": np.arange(6.0), "y": ["a", "b"] * 3}))
    bad = tmp_path / "b.csv"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=r"b\.csv" + message):
        load_tables([good, bad], target="y", seed=0)


def test_csv_with_a_byte_order_mark_and_blank_lines_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfx,y\n1,a\n\n2,b\n3,a\n4,b\n")
    dataset = load_tables([path], target="y", seed=0)
    assert dataset.feature_names == ("x",) and dataset.class_names == ("a", "b")
    assert rows_of(dataset) == 4


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (([1, 0] * 5, ["a", "b"] * 5), "holds numbers in .*a.csv but text in .*b.csv"),
        (([0.5, 1.0] * 5, [0, 1] * 5), r"a\.csv: target column 'y' holds non-integer numbers"),
        ((["yes"] * 10, ["yes"] * 10), r"has the values \['yes'\] across all files"),
    ],
    ids=["mixed", "continuous", "single-class"],
)
def test_csv_targets_must_be_class_labels(tmp_path: Path, targets: tuple, message: str) -> None:
    paths = [
        write(tmp_path / f"{name}.csv", pd.DataFrame({"x": np.arange(10.0), "y": values}))
        for name, values in zip("ab", targets)
    ]
    with pytest.raises(DataError, match=message):
        load_tables(paths, target="y", seed=0)


def test_csv_file_without_labelled_rows_is_named(tmp_path: Path) -> None:
    good = write(tmp_path / "a.csv", hospital(10, 0))
    empty = write(tmp_path / "b.csv", hospital(10, 1).assign(diagnosis=None))
    with pytest.raises(DataError, match=r"b\.csv has 0 rows with a value in target column 'diagnosis'"):
        load_tables([good, empty], target="diagnosis", seed=0)


def test_csv_infinite_feature_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.parquet", pd.DataFrame({"x": [1.0, np.inf, 2.0], "y": [0, 1, 0]}))
    with pytest.raises(DataError, match=r"a\.parquet: feature column\(s\) \['x'\] hold infinite values"):
        load_tables([path], target="y", seed=0)


# ---------------------------------------------------------------- plot


def test_label_distribution_plot_is_a_png(tmp_path: Path) -> None:
    skewed = Partitioning("dirichlet")
    dataset = load_builtin("breast_cancer", num_participants=5, partitioning=skewed, seed=0)
    written = plot_label_distribution(dataset, tmp_path / "plots" / "labels.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.stat().st_size > 5_000
