"""Gas is exact and deterministic, so the contract's cost target is a test, not a benchmark."""

from __future__ import annotations

import json

from fl_chain.bench.gas import measure_gas
from fl_chain.cli import main


def test_relayed_commitments_meet_the_gas_target() -> None:
    figures = measure_gas((1, 100))
    assert figures.relayed_per_commitment[100] <= 15_000
    assert figures.relayed_per_commitment[100] < figures.relayed_per_commitment[1]
    assert figures.naive_per_commitment > 100_000  # the baseline is what the issue describes
    assert figures.relayed_per_commitment[100] < figures.naive_per_commitment / 8


def test_gas_suite_writes_its_results(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench", "gas", "batch_sizes=[2,5]", "--out", str(tmp_path), "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "5 participants, relayed batch" in out and "naive" in out
    figures = json.loads((tmp_path / "g.json").read_text())
    assert figures["gas_per_commitment_5"] < figures["gas_per_commitment_2"] < figures["gas_naive_commitment"]
    assert "# Gas" in (tmp_path / "results.md").read_text()


def test_bench_needs_a_suite_or_quick(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench"]) == 2
    assert "name one suite" in capsys.readouterr().err
