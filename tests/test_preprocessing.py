"""Deployed sites preprocess alike from summaries alone: the same class indices and the
same federated standardization a simulation gets by loading every table in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from fl_chain.data.preprocessing import SharedPreprocessing, TableSummary
from fl_chain.data.tables import load_own_table, load_tables, summarize_table
from fl_chain.errors import DataError
from fl_chain.protocol import ProtocolError

SETTINGS = {"target": "diagnosis", "seed": 3, "test_fraction": 0.25}


def hospital_files(directory: Path) -> list[Path]:
    """Breast cancer rows split unevenly across three sites, text labels, some gaps."""
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map({0: "malignant", 1: "benign"})
    frame.loc[::17, "mean radius"] = np.nan
    paths = []
    shuffled = frame.sample(frac=1.0, random_state=0)
    for index, (start, stop) in enumerate([(0, 120), (120, 330), (330, len(shuffled))]):
        paths.append(directory / f"site-{index}.csv")
        shuffled.iloc[start:stop].to_csv(paths[-1], index=False)
    return paths


def test_sites_that_share_summaries_preprocess_like_one_process_with_every_table(tmp_path: Path) -> None:
    paths = hospital_files(tmp_path)
    summaries = {f"0x{i}": TableSummary.from_json(summarize_table(path, **SETTINGS, index=i).to_json(), f"0x{i}")
                 for i, path in enumerate(paths)}
    shared = SharedPreprocessing.from_dict(SharedPreprocessing.combine(summaries).to_dict())
    pooled = load_tables(paths, target="diagnosis", seed=3, test_fraction=0.25)
    assert shared.classes == pooled.class_names == ("benign", "malignant")

    for index, (path, simulated) in enumerate(zip(paths, pooled.participants)):
        deployed = load_own_table(path, **SETTINGS, index=index, shared=shared)
        np.testing.assert_array_equal(deployed.train_y, simulated.train_y)
        np.testing.assert_allclose(deployed.train_x, simulated.train_x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(deployed.test_x, simulated.test_x, rtol=1e-6, atol=1e-6)
        assert not np.isnan(deployed.train_x).any()


def test_summaries_name_the_site_whose_columns_differ(tmp_path: Path) -> None:
    paths = hospital_files(tmp_path)
    frame = pd.read_csv(paths[1]).drop(columns=["mean texture"])
    frame.to_csv(paths[1], index=False)
    summaries = {f"0x{i}": summarize_table(path, **SETTINGS, index=i) for i, path in enumerate(paths)}
    with pytest.raises(DataError, match="participant 0x1's table has features"):
        SharedPreprocessing.combine(summaries)


def test_a_table_with_a_label_the_consortium_never_saw_is_refused(tmp_path: Path) -> None:
    paths = hospital_files(tmp_path)
    shared = SharedPreprocessing.combine({"0x0": summarize_table(paths[0], **SETTINGS, index=0)})
    frame = pd.read_csv(paths[1])
    frame.loc[frame.index[:5], "diagnosis"] = "unknown"
    frame.to_csv(paths[1], index=False)
    with pytest.raises(DataError, match=r"holds labels \['unknown'\]"):
        load_own_table(paths[1], **SETTINGS, index=1, shared=shared)


def test_the_same_columns_in_another_order_are_one_standardization(tmp_path: Path) -> None:
    (tmp_path / "again").mkdir()
    paths = hospital_files(tmp_path)
    frame = pd.read_csv(paths[1])
    frame[list(reversed(frame.columns))].to_csv(paths[1], index=False)
    in_order = SharedPreprocessing.combine({f"0x{i}": summarize_table(path, **SETTINGS, index=i)
                                            for i, path in enumerate(hospital_files(tmp_path / "again"))})
    shuffled = SharedPreprocessing.combine({f"0x{i}": summarize_table(path, **SETTINGS, index=i)
                                            for i, path in enumerate(paths)})
    assert shuffled.feature_names == in_order.feature_names
    np.testing.assert_allclose(shuffled.standardization.mean, in_order.standardization.mean)
    np.testing.assert_allclose(shuffled.standardization.std, in_order.standardization.std)


@pytest.mark.parametrize("text", ["not json", '{"feature_names": ["a"]}',
                                  '{"feature_names": ["a", "b"], "labels": [0, 1], "count": [1], "total": [1], '
                                  '"total_squares": [1]}'])
def test_a_malformed_summary_is_refused_naming_its_sender(text: str) -> None:
    with pytest.raises(ProtocolError, match="participant 0xabc sent"):
        TableSummary.from_json(text, "0xabc")
