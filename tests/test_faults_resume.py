"""An aggregator killed at each step of the protocol, then resumed from the chain's state
(real runs: Flower simulation, real chain): the same global models as a run never
interrupted, every round accepted, and `flchain verify` passing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fl_chain.chain.anvil import AnvilNode

from conftest import SMALL_RUN, assert_verifies, flchain, summary_of

pytestmark = pytest.mark.slow



def _killed_run(run_dir: Path, drill: str, *overrides: str) -> str:
    """`flchain run` with the kill drill armed; returns its stderr once it died."""
    run_dir.mkdir(parents=True)
    environment = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLCHAIN_DRILL_KILL_AGGREGATOR": drill}
    log = run_dir.parent / f"{run_dir.name}.stderr"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "fl_chain.cli", "run", *SMALL_RUN, *overrides,
                                    f"hydra.run.dir={run_dir}"],
                                   stdout=subprocess.DEVNULL, stderr=stderr, env=environment, start_new_session=True)
        try:
            process.wait(timeout=600)
        finally:  # the simulation's worker processes outlive a killed aggregator: end them too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.parametrize("drill", ["1:opened", "2:relayed", "2:stored", "2:finalized"])
def test_an_aggregator_killed_at_any_step_resumes_to_the_same_models(tmp_path: Path, drill: str, small_runs: Path) -> None:
    run_dir = tmp_path / "run"
    stderr = _killed_run(run_dir, drill)
    assert f"drill: killing the aggregator in round {drill.replace(':', ' after ')}" in stderr.replace("'", "")
    assert not (run_dir / "summary.json").exists()

    resumed = flchain("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    reference = summary_of(small_runs / "0")["rounds"]  # the same config and seed, never interrupted
    rounds = summary_of(run_dir)["rounds"]
    assert [r["global_cid"] for r in rounds] == [r["global_cid"] for r in reference]
    assert [(r["accepted"], r["attempt"], r["commitments"], r["included"]) for r in rounds] == [(True, 1, 3, 3)] * 2
    killed_round = int(drill.split(":")[0])
    assert [r["resumed"] for r in rounds] == [number == killed_round for number in (1, 2)]
    assert_verifies(run_dir)


@pytest.mark.anvil
def test_an_aggregator_killed_on_a_live_node_resumes_there(tmp_path: Path, anvil_node: AnvilNode) -> None:
    run_dir = tmp_path / "run"
    where = ("chain=rpc", f"chain.url={anvil_node.url}", f"chain.chain_id={anvil_node.chain_id}")
    _killed_run(run_dir, "2:stored", *where)
    resumed = flchain("resume", str(run_dir), *where)  # a node of its own: named again, never taken from the files
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rounds = summary_of(run_dir)["rounds"]
    assert [(r["accepted"], r["attempt"], r["commitments"], r["included"], r["resumed"]) for r in rounds] == [
        (True, 1, 3, 3, False), (True, 1, 3, 3, True)]
    contract = json.loads((run_dir / "federation.json").read_text())["address"]
    verified = flchain("verify", "--rpc", anvil_node.url, "--contract", contract, "--store", str(run_dir / "store"))
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]


def test_resume_refuses_a_finished_run_and_a_run_whose_anvil_is_gone(small_runs: Path, tmp_path: Path) -> None:
    finished = flchain("resume", str(small_runs / "0"))
    assert finished.returncode == 2
    assert "nothing to resume" in finished.stderr and "Traceback" not in finished.stderr

    on_anvil = tmp_path / "anvil-run"
    on_anvil.mkdir()
    config = (small_runs / "0" / "config.yaml").read_text()
    (on_anvil / "config.yaml").write_text(config.replace("backend: embedded", "backend: anvil"))
    (on_anvil / "federation.json").write_text((small_runs / "0" / "federation.json").read_text())
    gone = flchain("resume", str(on_anvil))
    assert gone.returncode == 2, gone.stderr
    assert "cannot be resumed" in gone.stderr and "Traceback" not in gone.stderr
