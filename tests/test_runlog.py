"""metrics.csv stays one table when a run is resumed by a newer fl-chain with more columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fl_chain.errors import UsageError
from fl_chain.runlog import RunLog


def test_a_resumed_run_written_with_fewer_columns_is_rewritten_under_the_new_header(tmp_path: Path) -> None:
    old_columns = ["round", "scope", "participant", "train_loss", "loss", "accuracy", "examples", "excluded"]
    with open(tmp_path / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(old_columns)
        writer.writerow([1, "participant", "0xabc", 0.5, 0.4, 0.9, 10, ""])
    (tmp_path / "rounds.jsonl").write_text("")
    runlog = RunLog(tmp_path, resume=True)
    runlog.participant(2, "0xdef", {}, {"loss": 0.3, "accuracy": 0.95}, train_loss=0.2, examples=12)
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["participant"] for row in rows] == ["0xabc", "0xdef"]
    assert rows[0]["accuracy"] == "0.9" and rows[0]["centre_distance"] == "" and rows[1]["examples"] == "12"


def test_a_resumed_run_with_columns_this_version_does_not_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("round,scope,participant,from_the_future\n")
    (tmp_path / "rounds.jsonl").write_text("")
    with pytest.raises(UsageError, match="from_the_future"):
        RunLog(tmp_path, resume=True)
