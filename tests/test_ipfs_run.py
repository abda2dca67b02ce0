"""A whole run on the IPFS backend: every participant and the aggregator store and fetch
through kubo's RPC API (here the in-test double of tests/kubo_double.py), and the blobs
keep the CIDs a local-store run gives them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubo_double import KuboDouble

from fl_chain.storage.cid import Cid

from conftest import SMALL_RUN, flchain

pytestmark = pytest.mark.slow


def test_a_run_on_kubo_keeps_the_local_stores_cids_and_verifies(tmp_path: Path, small_runs: Path) -> None:
    run_dir = tmp_path / "run"
    with KuboDouble(tmp_path / "kubo") as kubo:
        completed = flchain("run", *SMALL_RUN, "rounds=1", "storage=ipfs", f"storage.api={kubo.api}",
                            f"hydra.run.dir={run_dir}")
        assert completed.returncode == 0, completed.stderr[-3000:]
        (only,) = json.loads((run_dir / "summary.json").read_text())["rounds"]
        reference = json.loads((small_runs / "0" / "summary.json").read_text())["rounds"][0]
        assert only["global_cid"] == reference["global_cid"]
        assert kubo.find_missing(Cid.parse(only["global_cid"])) is None  # the model is on kubo, whole
        assert {call.command for call in kubo.calls} >= {"add", "pin/add", "block/get"}
        assert not (run_dir / "store").exists()  # nothing went to a local store

        unnamed = flchain("verify", str(run_dir))  # the daemon the run's files name is not reached on their word
        assert unnamed.returncode == 2 and "--ipfs-api" in unnamed.stderr
        verified = flchain("verify", str(run_dir), "--ipfs-api", kubo.api)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
