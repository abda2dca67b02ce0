"""`flchain bench --quick`: the headline figures, as JSON, from reduced suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.bench import QUICK_KEYS

from conftest import flchain


@pytest.mark.slow
@pytest.mark.anvil
def test_quick_bench_writes_the_headline_figures(anvil_binary: Path, tmp_path: Path) -> None:
    completed = flchain("bench", "--quick", "--json", str(tmp_path / "quick.json"), "--out", str(tmp_path / "results"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads((tmp_path / "quick.json").read_text())
    assert set(QUICK_KEYS) <= set(figures)
    assert all(figures[key] > 0 for key in QUICK_KEYS)
    assert figures["gas_per_commitment_100"] <= 15_000
    for suite in ("gas", "throughput", "overhead"):
        assert (tmp_path / "results" / suite / "results.md").is_file()
