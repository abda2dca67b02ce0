"""Tasks from outside the repository, and the new built-in ones, run end to end: trained on
chain, verified, reproduced to the same global-model CIDs.

docs/tasks.md is the source of the outside tasks: its `# file:` blocks are written into a
fresh directory that is neither fl_chain/, clients/ nor aggregator/, and its `# run:`
commands are run as documented, so the guide cannot drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_tasks import write_image_folders

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "tasks.md"
BLOCK = re.compile(r"```(?:python|bash)\n(.*?)```", re.DOTALL)
SMALL = ["num_participants=3", "quorum=2", "num_validators=2", "attestation_threshold=2"]

pytestmark = pytest.mark.slow


def guide_blocks() -> tuple[dict[str, str], dict[str, str]]:
    """The guide's files by path and its commands by name."""
    files, commands = {}, {}
    for block in BLOCK.findall(GUIDE.read_text()):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
        elif first.startswith("# run: "):
            commands[first.removeprefix("# run: ").strip()] = rest.replace("\\\n", " ")
    return files, commands


def flchain(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([str(Path(sys.executable).with_name("flchain")), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=900)


def documented(command: str) -> list[str]:
    """A `# run:` command's flchain arguments (its PYTHONPATH=. is what `flchain` above sets)."""
    words = shlex.split(command)
    assert words[0] == "PYTHONPATH=." and words[1] == "flchain", command
    return words[2:]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def verified(cwd: Path, run_dir: Path) -> dict:
    completed = flchain(cwd, "verify", str(run_dir), "--json")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(completed.stdout)


def reproduced(cwd: Path, run_dir: Path, *overrides: str) -> None:
    completed = flchain(cwd, "reproduce", str(run_dir), *overrides)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "every global model reproduced exactly" in completed.stderr


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's packages, written where the repository is not."""
    root = tmp_path_factory.mktemp("researcher")
    files, _ = guide_blocks()
    assert {"wine_tasks/softmax.py", "digits_app/task.py"} <= set(files)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_task_class_from_the_guide_trains_and_verifies(outside: Path) -> None:
    _, commands = guide_blocks()
    completed = flchain(outside, *documented(commands["style 1"]))
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = outside / "runs" / "wine"
    final = summary(run_dir)["final"]
    assert final["accuracy"] >= 0.9 and set(final["centralized"]) == {"loss", "accuracy"}
    assert verified(outside, run_dir)["ok"]


def test_a_flower_module_from_the_guide_nears_its_baseline_verifies_and_reproduces(outside: Path) -> None:
    _, commands = guide_blocks()
    completed = flchain(outside, *documented(commands["style 2"]))
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = outside / "runs" / "digits"
    final = summary(run_dir)["final"]
    assert final["accuracy"] >= final["centralized"]["accuracy"] - 0.03, final
    assert verified(outside, run_dir)["ok"]
    refused = flchain(outside, "reproduce", str(run_dir))  # the module is code: only on the user's word
    assert refused.returncode == 2 and "repeat task.module=digits_app.task" in refused.stderr
    reproduced(outside, run_dir, "task.module=digits_app.task")


@pytest.mark.parametrize("task", ["images", "diabetes"])
def test_the_new_builtin_tasks_train_verify_and_reproduce(tmp_path: Path, task: str) -> None:
    where = []
    if task == "images":
        dirs = f"task.dirs=[{','.join(write_image_folders(tmp_path / 'data', per_class=10))}]"
        args, where = ["task=images", dirs, "task.size=12", "quorum=2", "num_validators=2",
                       "attestation_threshold=2"], [dirs]
    else:
        args = ["task=diabetes", *SMALL]
    run_dir = tmp_path / "run"
    completed = flchain(tmp_path, "run", *args, "rounds=2", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    final = summary(run_dir)["final"]
    names = {"loss", "accuracy"} if task == "images" else {"loss", "mse", "r2"}
    assert names <= set(final) and set(final["centralized"]) == names
    if task == "images":
        assert final["accuracy"] >= 0.8 and (run_dir / "accuracy.png").is_file()
    else:
        assert final["r2"] > 0 and (run_dir / "mse.png").is_file()
    with open(run_dir / "metrics.csv") as handle:
        assert names <= set(handle.readline().strip().split(","))
    assert verified(tmp_path, run_dir)["ok"]
    reproduced(tmp_path, run_dir, *where)
