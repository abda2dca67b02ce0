"""Faults in real runs (Flower simulation, real chain): participants that crash, hang or
send NaN, rounds that miss the quorum, a chain node that goes away (the aggregator killed
and resumed: test_faults_resume.py). Every run must end with every round accepted and
`flchain verify` passing."""

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

from conftest import SMALL_RUN, assert_verifies, flchain, summary_of

pytestmark = pytest.mark.slow


def _participants(run_dir: Path) -> list[str]:
    members = json.loads((run_dir / "federation.json").read_text())["members"]
    return [m["address"] for m in members if "PARTICIPANT" in m["roles"]]


def test_participants_that_crash_hang_or_send_nan_are_excluded_with_the_reason(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # round 1 is clean: processes start and data loads then, which takes seconds on a busy
    # machine (the suite runs two workers), so the timeout leaves room for it
    drills = ("drills=[{participant:2,round:2,kind:crash},{participant:1,round:3,kind:nan},"
              "{participant:0,round:4,kind:hang,seconds:40}]")
    completed = flchain("run", *SMALL_RUN, "rounds=4", "reply_timeout=25", drills, f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]

    participants = _participants(run_dir)
    rounds = summary_of(run_dir)["rounds"]
    assert [r["accepted"] for r in rounds] == [True] * 4
    assert [(r["commitments"], r["included"]) for r in rounds] == [(3, 3), (2, 2), (3, 2), (2, 2)]
    expected = {2: (participants[2], "crashed"), 3: (participants[1], "NaN"), 4: (participants[0], "no reply within 25 s")}
    assert rounds[0]["exclusions"] == []
    for summary in rounds[1:]:
        who, why = expected[summary["round"]]
        assert [e["participant"] for e in summary["exclusions"]] == [who], summary["exclusions"]
        assert why in summary["exclusions"][0]["reason"]
    with open(run_dir / "metrics.csv") as handle:
        excluded = {(int(row["round"]), row["participant"]) for row in csv.DictReader(handle) if row["excluded"]}
    assert excluded == {(number, who) for number, (who, _) in expected.items()}
    assert_verifies(run_dir)


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

    first, second = summary_of(run_dir)["rounds"]
    assert (first["attempt"], first["accepted"], first["included"]) == (2, True, 3)
    assert (second["attempt"], second["accepted"]) == (1, True)
    assert any("attempt 1: failed to train" in e["reason"] for e in first["exclusions"])
    if backend == "embedded":  # anvil's chain ended with the run; the embedded journal replays
        assert_verifies(run_dir)


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
    (only,) = summary_of(run_dir)["rounds"]
    assert (only["attempt"], only["accepted"], only["included"], only["resumed"]) == (3, True, 3, True)
    assert_verifies(run_dir)


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
        rounds = summary_of(run_dir)["rounds"]
        assert [(r["round"], r["accepted"]) for r in rounds] == [(1, True), (2, True), (3, True)]
        contract = json.loads((run_dir / "federation.json").read_text())["address"]
        verified = flchain("verify", "--rpc", proxy.url, "--contract", contract, "--store", str(run_dir / "store"))
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    finally:
        proxy.cut()
