"""The accuracy suite end to end on a tiny config: real fl-chain runs, its table, JSON and plot."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO_ROOT

TINY = ["~tasks.digits", "tasks.breast_cancer.num_participants=3", "tasks.breast_cancer.rounds=1",
        "partitions=[{scheme:iid}]", "seeds=[0]"]


@pytest.mark.slow
def test_accuracy_suite_measures_every_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.suites.accuracy import run  # Flower and torch: only when running

    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs" / "bench"), version_base="1.3"):
        config = OmegaConf.to_container(compose("accuracy", overrides=TINY), resolve=True)
    assert isinstance(config, dict)

    returned = run(config, tmp_path)

    for name in ("results.md", "results.json", "accuracy.png"):
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == returned
    accuracies = {m["method"]: m["accuracy"] for m in results["measurements"]}
    assert set(accuracies) == {"centralized", "local_only", "fedavg", "fedprox"}
    assert all(0.0 <= accuracy <= 1.0 for accuracy in accuracies.values())
    assert all(a["seeds"] == 1 and 0.0 <= a["mean"] <= 1.0 for a in results["aggregates"])
    assert "| iid |" in (tmp_path / "results.md").read_text()
    assert tempfile.gettempdir() not in (tmp_path / "results.json").read_text()  # no run paths
