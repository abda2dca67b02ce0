"""Faults in real runs (Flower simulation, real chain): participants that crash, hang or
send NaN, rounds that miss the quorum, and an aggregator killed at each protocol step
and resumed. Every run must end with every round accepted and `flchain verify` passing."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tcp_proxy import TcpProxy

from fl_chain.chain.anvil import AnvilNode

from conftest import SMALL_RUN, flchain

pytestmark = pytest.mark.slow


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _verified(run_dir: Path) -> None:
    completed = flchain("verify", str(run_dir))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]


def _participants(run_dir: Path) -> list[str]:
    members = json.loads((run_dir / "federation.json").read_text())["members"]
    return [m["address"] for m in members if "PARTICIPANT" in m["roles"]]


def test_participants_that_crash_hang_or_send_nan_are_excluded_with_the_reason(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # round 1 is clean: processes start and data loads then, which a short reply_timeout would not allow
    drills = ("drills=[{participant:2,round:2,kind:crash},{participant:1,round:3,kind:nan},"
              "{participant:0,round:4,kind:hang,seconds:14}]")
    completed = flchain("run", *SMALL_RUN, "rounds=4", "reply_timeout=8", drills, f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]

    participants = _participants(run_dir)
    rounds = _summary(run_dir)["rounds"]
    assert [r["accepted"] for r in rounds] == [True] * 4
    assert [(r["commitments"], r["included"]) for r in rounds] == [(3, 3), (2, 2), (3, 2), (2, 2)]
    expected = {2: (participants[2], "crashed"), 3: (participants[1], "NaN"), 4: (participants[0], "no reply within 8 s")}
    assert rounds[0]["exclusions"] == []
    for summary in rounds[1:]:
        who, why = expected[summary["round"]]
        assert [e["participant"] for e in summary["exclusions"]] == [who], summary["exclusions"]
        assert why in summary["exclusions"][0]["reason"]
    with open(run_dir / "metrics.csv") as handle:
        excluded = {(int(row["round"]), row["participant"]) for row in csv.DictReader(handle) if row["excluded"]}
    assert excluded == {(number, who) for number, (who, _) in expected.items()}
    _verified(run_dir)


@pytest.mark.parametrize("backend", ["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def test_a_round_below_the_quorum_is_failed_on_chain_and_retried(tmp_path: Path, backend: str,
                                                                 request: pytest.FixtureRequest) -> None:
    if backend == "anvil":
        request.getfixturevalue("anvil_binary")
    run_dir = tmp_path / "run"
    completed = flchain("run", *SMALL_RUN, "quorum=3", f"chain={backend}",
                        "drills=[{participant:1,round:1,kind:crash}]", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "below the quorum of 3; failing it on chain and retrying" in completed.stderr

    first, second = _summary(run_dir)["rounds"]
    assert (first["attempt"], first["accepted"], first["included"]) == (2, True, 3)
    assert (second["attempt"], second["accepted"]) == (1, True)
    assert any("attempt 1: failed to train" in e["reason"] for e in first["exclusions"])
    if backend == "embedded":  # anvil's chain ended with the run; the embedded journal replays
        _verified(run_dir)


def test_a_round_that_keeps_failing_stops_the_run_resumably(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    drills = "drills=[{participant:1,round:1,kind:crash,attempt:1},{participant:1,round:1,kind:crash,attempt:2}]"
    stopped = flchain("run", *SMALL_RUN, "rounds=1", "quorum=3", "max_attempts=2", drills, f"hydra.run.dir={run_dir}")
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("flchain: error: round 1 failed 2 attempts in a row"), last
    assert f"flchain resume {run_dir}" in last and "Traceback" not in stopped.stderr

    resumed = flchain("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (only,) = _summary(run_dir)["rounds"]
    assert (only["attempt"], only["accepted"], only["included"], only["resumed"]) == (3, True, 3, True)
    _verified(run_dir)


# ---------------------------------------------------------------- the aggregator killed, then resumed


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

    reference = _summary(small_runs / "0")["rounds"]  # the same config and seed, never interrupted
    rounds = _summary(run_dir)["rounds"]
    assert [r["global_cid"] for r in rounds] == [r["global_cid"] for r in reference]
    assert [(r["accepted"], r["attempt"], r["commitments"], r["included"]) for r in rounds] == [(True, 1, 3, 3)] * 2
    killed_round = int(drill.split(":")[0])
    assert [r["resumed"] for r in rounds] == [number == killed_round for number in (1, 2)]
    _verified(run_dir)


@pytest.mark.anvil
def test_an_aggregator_killed_on_a_live_node_resumes_there(tmp_path: Path, anvil_node: AnvilNode) -> None:
    run_dir = tmp_path / "run"
    where = ("chain=rpc", f"chain.url={anvil_node.url}", f"chain.chain_id={anvil_node.chain_id}")
    _killed_run(run_dir, "2:stored", *where)
    resumed = flchain("resume", str(run_dir), *where)  # a node of its own: named again, never taken from the files
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rounds = _summary(run_dir)["rounds"]
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


# ---------------------------------------------------------------- the chain's node unreachable


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.anvil
def test_a_run_rides_out_a_short_outage_and_stops_resumably_on_a_long_one(anvil_node: AnvilNode, tmp_path: Path) -> None:
    proxy = TcpProxy(anvil_node.port)  # the network between the run and its node
    proxy.restore()
    run_dir, log = tmp_path / "run", tmp_path / "run.stderr"
    command = [sys.executable, "-m", "fl_chain.cli", "run", *SMALL_RUN, "rounds=3", "chain=rpc",
               f"chain.url={proxy.url}", f"chain.chain_id={anvil_node.chain_id}", "chain.retry_seconds=5",
               f"hydra.run.dir={run_dir}"]
    try:
        with open(log, "w") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                       env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
            try:
                _wait_for_line(log, "[round 1/3]", process)
                proxy.cut_for(2)  # shorter than retry_seconds: ridden out
                _wait_for_line(log, "[round 2/3]", process)
                proxy.cut()  # for good: the run must stop, keeping what it did
                process.wait(timeout=600)
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        stderr_text = log.read_text()
        assert process.returncode == 1, stderr_text[-3000:]
        assert "unreachable" in stderr_text and "retrying in" in stderr_text
        last = stderr_text.strip().splitlines()[-1]
        assert last.startswith("flchain: error: ") and f"flchain resume {run_dir}" in last, last
        assert "Traceback" not in stderr_text

        proxy.restore()
        resumed = flchain("resume", str(run_dir), "chain=rpc", f"chain.url={proxy.url}",
                          f"chain.chain_id={anvil_node.chain_id}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        rounds = _summary(run_dir)["rounds"]
        assert [(r["round"], r["accepted"]) for r in rounds] == [(1, True), (2, True), (3, True)]
        contract = json.loads((run_dir / "federation.json").read_text())["address"]
        verified = flchain("verify", "--rpc", proxy.url, "--contract", contract, "--store", str(run_dir / "store"))
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    finally:
        proxy.cut()
