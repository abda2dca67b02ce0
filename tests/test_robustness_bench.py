"""The robustness benchmark's in-process replay ends where a real on-chain run ends.

The matrix is only worth its figures if a replayed cell is the run `flchain run` makes of
the same config: the same model bytes, the same outliers excluded. One attacked cell is
run both ways and compared bit for bit; the suite's quick variant runs end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aggregator.config import compose_experiment
from experiments.bench import suite_config
from experiments.suites.robustness import Cell, experiment_of, measure
from fl_chain.bench.robustness import replay
from fl_chain.codec import decode_model
from fl_chain.consortium import seeded_participant_address
from fl_chain.errors import UsageError

from conftest import assert_verifies, flchain, summary_of

ATTACKED_RUN = ["rounds=3", "strategy=median", "drills=[{participant:4,kind:scale,factor:50}]"]


@pytest.mark.slow
def test_a_replayed_cell_is_the_on_chain_run_bit_for_bit(tmp_path: Path) -> None:
    completed = flchain("run", *ATTACKED_RUN, f"hydra.run.dir={tmp_path}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    on_chain, _ = decode_model((tmp_path / "model.safetensors").read_bytes())
    replayed = replay(compose_experiment(ATTACKED_RUN))
    assert on_chain.keys() == replayed.model.keys()
    for name in on_chain:
        assert np.array_equal(on_chain[name], replayed.model[name]), name
    attacker = seeded_participant_address(0, 4)
    summary = summary_of(tmp_path)
    assert summary["outliers"] == {attacker: [1, 2, 3]} and replayed.outliers == {4: [1, 2, 3]}
    assert summary["final"]["accuracy"] == pytest.approx(replayed.metrics["accuracy"])
    assert_verifies(tmp_path)
    framed = {**summary, "outliers": {seeded_participant_address(0, 1): [2]}}  # a publisher names an honest member
    (tmp_path / "summary.json").write_text(json.dumps(framed))
    completed = flchain("verify", str(tmp_path))
    assert completed.returncode == 1 and "outliers" in completed.stdout, completed.stdout[-2000:]


def test_a_scaling_attacker_sinks_fedavg_and_not_the_median(tmp_path: Path) -> None:
    config = suite_config("robustness", ["seeds=[0]"], quick=True)
    clean = measure(config, Cell("breast_cancer_5", 0, "fedavg", "none", 0.0))
    fedavg = measure(config, Cell("breast_cancer_5", 0, "fedavg", "scale", 0.2))
    median = measure(config, Cell("breast_cancer_5", 0, "median", "scale", 0.2))
    assert clean.accuracy is not None and fedavg.accuracy is not None and median.accuracy is not None
    assert fedavg.accuracy < clean.accuracy - 0.1
    assert median.accuracy >= clean.accuracy - 0.02
    assert median.detection == 1.0 and median.false_positive == 0.0
    assert fedavg.detection is not None and fedavg.detection < 1.0  # only the norm bound stops some of its rounds


def test_an_inflated_claim_is_refused_by_a_members_own_cap_and_counts_under_the_federations() -> None:
    own = suite_config("robustness", ["overrides=[]", "attacks.inflate.examples=1000000000"], quick=True)
    refused = measure(own, Cell("breast_cancer_5", 0, "fedavg", "inflate", 0.2))
    assert refused.detection == 1.0 and refused.accuracy is not None
    generous = suite_config("robustness", [], quick=True)  # everyone admitted with max_examples
    counted = measure(generous, Cell("breast_cancer_5", 0, "fedavg", "inflate", 0.2))
    assert counted.detection == 0.0 and counted.accuracy != refused.accuracy


def test_krum_gets_the_quorum_its_f_needs() -> None:
    config = suite_config("robustness", [], quick=True)
    assert experiment_of(config, Cell("breast_cancer_5", 0, "krum", "none", 0.0))["quorum"] == 5


def test_the_quick_variant_runs_end_to_end_and_writes_its_results(tmp_path: Path) -> None:
    completed = flchain("bench", "robustness", "quick.attacks=[none,scale]", "--quick", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(m["rule"], m["attack"]) for m in results["measurements"]} >= {("median", "scale"), ("fedavg", "none")}
    assert "| scale 20% |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "robustness.png").read_bytes().startswith(b"\x89PNG")
    assert "[robustness 1/" in completed.stderr


def test_a_suite_without_a_quick_variant_says_so() -> None:
    with pytest.raises(UsageError, match="the gas suite has no quick variant"):
        suite_config("gas", [], quick=True)
