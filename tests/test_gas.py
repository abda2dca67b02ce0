"""Gas is exact and deterministic, so the contract's cost target is a test, not a benchmark."""

from __future__ import annotations

from fl_chain.bench.gas import measure_gas
from fl_chain.cli import main


def test_relayed_commitments_meet_the_gas_target() -> None:
    figures = measure_gas((1, 100))
    assert figures.relayed_per_commitment[100] <= 15_000
    assert figures.relayed_per_commitment[100] < figures.relayed_per_commitment[1]
    assert figures.naive_per_commitment > 100_000  # the baseline is what the issue describes
    assert figures.relayed_per_commitment[100] < figures.naive_per_commitment / 8


def test_bench_command_prints_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench", "--suite", "gas", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "relayed batch of 2" in out and "naive" in out
