"""`flwr run .` starts the same ServerApp and ClientApp from pyproject.toml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def processes_with_home(home: Path) -> list[int]:
    """Flower leaves its local SuperLink running: find what this test started by its FLWR_HOME."""
    marker = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_flwr_run_trains_an_accepted_federation(tmp_path: Path) -> None:
    home = tmp_path / "flwr-home"
    environment = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    overrides = "rounds=2 num_participants=2 quorum=2 num_validators=2"
    run_config = f'overrides="{overrides}" run-dir="{tmp_path / "runs"}"'
    try:
        completed = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "--stream", "--run-config", run_config],
            cwd=Path(__file__).resolve().parent.parent, env=environment, capture_output=True, text=True, timeout=400,
        )
    finally:
        for pid in processes_with_home(home):
            os.kill(pid, signal.SIGKILL)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["accepted"] for r in summary["rounds"]] == [True, True]
    assert "[round 2/2]" in completed.stdout
