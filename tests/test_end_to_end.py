"""`flchain run` end to end: Flower simulation, embedded chain, sealed updates, run directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fl_chain.storage.unixfs import cid_of

from conftest import SMALL_RUN, flchain, summary_of


@pytest.fixture
def sweep(small_runs: Path) -> Path:
    return small_runs


@pytest.mark.slow
def test_run_directory_holds_an_accepted_auditable_run(sweep: Path) -> None:
    run_dir = sweep / "0"
    summary = summary_of(run_dir)
    assert summary["chain"]["backend"] == "embedded" and summary["chain"]["contract"].startswith("0x")
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for record in summary["rounds"]:
        assert record["accepted"] and record["commitments"] >= 2 and record["included"] >= 2
        assert record["gas_used"] > 0 and 0 <= record["metrics"]["accuracy"] <= 1
    assert summary["final"]["global_cid"] == summary["rounds"][-1]["global_cid"]
    assert 0 < summary["final"]["centralized"]["accuracy"] <= 1 and 0 <= summary["final"]["accuracy"] <= 1
    assert str(cid_of((run_dir / "model.safetensors").read_bytes())) == summary["final"]["global_cid"]
    for name in ("config.yaml", "metrics.csv", "federation.json", "accuracy.png", "loss.png",
                 "label_distribution.png", "ledger/genesis.json", "ledger/blocks.jsonl"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "metrics.csv") as handle:
        scopes = [row["scope"] for row in csv.DictReader(handle)]
    assert scopes.count("participant") == 2 * 3 and scopes.count("round") == 2


@pytest.mark.slow
def test_same_seed_same_models_other_seed_other_models(sweep: Path, tmp_path: Path) -> None:
    completed = flchain("reproduce", str(sweep / "0"), "--out", str(tmp_path / "again"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    cids = lambda run_dir: [r["global_cid"] for r in summary_of(run_dir)["rounds"]]  # noqa: E731
    assert cids(tmp_path / "again") == cids(sweep / "0")
    assert [line.split()[-1] for line in completed.stdout.splitlines()[1:]] == ["yes", "yes"]
    assert "every global model reproduced exactly" in completed.stderr
    assert set(cids(sweep / "1")).isdisjoint(cids(sweep / "0"))
    assert "[round 2/2]" in completed.stderr  # progress is shown


@pytest.mark.slow
@pytest.mark.anvil
def test_a_run_on_a_live_chain_verifies_over_rpc(anvil_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "live"
    completed = flchain("run", *SMALL_RUN, "chain=rpc", f"chain.url={anvil_node.url}",
                        f"chain.chain_id={anvil_node.chain_id}", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not (run_dir / "ledger").exists()  # the live chain is the record
    contract = json.loads((run_dir / "federation.json").read_text())["address"]
    verified = flchain("verify", "--rpc", anvil_node.url, "--contract", contract, "--store", str(run_dir / "store"),
                       "--key", str(run_dir / "keys" / "aggregator.json"))
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    assert verified.stdout.strip().splitlines()[-1].startswith("verdict: PASSED")


def test_bad_config_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    completed = flchain("run", "quorum=9", f"hydra.run.dir={tmp_path}")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        "flchain: error: quorum 9 must be between 1 and num_participants (5)"
    )
    assert "Traceback" not in completed.stderr


def test_a_missing_required_value_is_named(tmp_path: Path) -> None:
    completed = flchain("run", "task=csv", "task.target=outcome", f"hydra.run.dir={tmp_path}")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        "flchain: error: the config needs a value for task.files (e.g. task.files=...)"
    )
