"""Bad input through the real `flchain` command: exit code 2, one `flchain: error:` line
naming the problem, no traceback, and nothing on chain (all of these fail before Flower starts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import flchain

# a csv run of two files (two participants): the good one and the one under test
CSV_RUN = ("task=csv", "task.target=y", "quorum=2", "num_validators=2", "attestation_threshold=1")
AS_ROOT = os.geteuid() == 0


def csv_files(*names: str) -> str:
    return "task.files=[{tmp}/good.csv," + ",".join(f"{{tmp}}/{name}" for name in names) + "]"


def write_inputs(tmp: Path) -> None:
    """Data files and run directories for the cases; `{tmp}` in a case's arguments is `tmp`."""
    (tmp / "good.csv").write_text("x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(6)))
    (tmp / "folder.csv").mkdir()
    (tmp / "locked.csv").write_text("x,y\n1,a\n2,b\n")
    (tmp / "locked.csv").chmod(0)
    (tmp / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp / "nolabel.csv").write_text("x,z\n1,a\n2,b\n")
    (tmp / "textcell.csv").write_text("x,y\n1,a\nabc,b\n3,a\n")
    (tmp / "ragged.csv").write_text("x,y\n1,a\n2,b,7\n3,a\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "twice.csv").write_text("x,x,y\n1,2,a\n3,4,b\n")
    (tmp / "a-file").write_text("not a run\n")
    (tmp / "not-a-run").mkdir()
    (tmp / "unfinished").mkdir()
    (tmp / "unfinished" / "config.yaml").write_text("seed: 0\n")


CASES = [
    # config keys, group options and value types (composed before Hydra starts)
    pytest.param(("run", "roundz=3"), "unknown config key 'roundz' (did you mean 'rounds'?)", id="unknown-key"),
    pytest.param(("run", "task.epochz=2"), "unknown config key 'task.epochz' (did you mean 'task.epochs'?)",
                 id="unknown-nested-key"),
    pytest.param(("run", "partition=iid", "partition.alpha=0.3"), "unknown config key 'partition.alpha' "
                 "(partition has: scheme)", id="key-of-another-option"),
    pytest.param(("run", "task=nope"), "task=nope: choose one of breast_cancer, csv, custom, diabetes, digits, flower, images", id="group-option"),
    pytest.param(("run", "rounds=abc"), "rounds must be an integer, got 'abc'", id="type-int"),
    pytest.param(("run", "fraction_train=yes"), "fraction_train must be a number, got 'yes'", id="type-float"),
    pytest.param(("run", "task.learning_rate=[1]"), "task.learning_rate must be a number, got [1]", id="type-list"),
    pytest.param(("run", "rounds=[1,"), "cannot parse the override 'rounds=[1,'", id="unparsable"),
    pytest.param(("run", "seed=0,1"), "seed=0,1 is a sweep: add -m", id="sweep-without-m"),
    pytest.param(("run", "-m", "task=digits,nope"), "task=nope: choose one of", id="sweep-group-option"),
    pytest.param(("run", "-m", "seed=0,1", "--cfg", "job"), "only one of --multirun, --cfg may be given",
                 id="hydra-modes"),
    # values (aggregator.config.validate, reached for every job before the first one runs)
    pytest.param(("run", "quorum=9"), "quorum 9 must be between 1 and num_participants (5)", id="quorum"),
    pytest.param(("run", "-m", "quorum=2,9"), "quorum 9 must be between 1 and num_participants (5)",
                 id="quorum-in-sweep"),
    pytest.param(("run", "attestation_threshold=4"), "attestation_threshold 4 must be between 1 and "
                 "num_validators (3)", id="threshold"),
    pytest.param(("run", "round_duration=-5"), "round_duration must be at least 1 second, got -5",
                 id="round-duration"),
    pytest.param(("run", "reply_timeout=0"), "reply_timeout must be positive, got 0", id="reply-timeout"),
    pytest.param(("run", "seed=-1"), "seed must be at least 0, got -1", id="seed"),
    pytest.param(("run", "task.learning_rate=0"), "learning_rate must be positive", id="learning-rate"),
    pytest.param(("run", *CSV_RUN, "task.files={tmp}/good.csv"), "task.files must be a list of paths",
                 id="files-not-a-list"),
    # values only the data can judge (loaded before the chain starts)
    pytest.param(("run", "drills=[{{participant:1,round:1,kind:explode}}]"), "drill kind 'explode' is not one of",
                 id="drill-kind"),
    pytest.param(("run", "drills=[{{participant:7,round:1,kind:crash}}]"), "names participant 7, not one of this "
                 "run's 0..4", id="drill-participant"),
    pytest.param(("run", "drills=[{{participant:1,kind:scale,sigma:2}}]"), "scale takes factor, not sigma",
                 id="drill-attack-parameter"),
    pytest.param(("run", "task=diabetes", "drills=[{{participant:1,kind:label_flip}}]"), "a label_flip drill flips "
                 "class labels, so it needs a built-in classification task; diabetes is not one", id="drill-label-flip"),
    pytest.param(("run", "partition.alpha=0"), "dirichlet alpha must be positive", id="dirichlet-alpha"),
    pytest.param(("run", "num_participants=600"), "num_participants must be between 1 and the 569 rows",
                 id="more-participants-than-rows"),
    # the csv task's files
    pytest.param(("run", *CSV_RUN, csv_files("gone.csv")), "{tmp}/gone.csv does not exist", id="csv-missing"),
    pytest.param(("run", *CSV_RUN, csv_files("folder.csv")), "{tmp}/folder.csv is a directory", id="csv-directory"),
    pytest.param(("run", *CSV_RUN, csv_files("locked.csv")), "{tmp}/locked.csv is not readable (permission denied)",
                 id="csv-unreadable", marks=pytest.mark.skipif(AS_ROOT, reason="root reads any file")),
    pytest.param(("run", *CSV_RUN, csv_files("binary.csv")), "{tmp}/binary.csv is not UTF-8 text (byte 0x89 on "
                 "line 1)", id="csv-binary"),
    pytest.param(("run", *CSV_RUN, csv_files("nolabel.csv")), "{tmp}/nolabel.csv has no target column 'y' "
                 "(its columns: x, z)", id="csv-no-label-column"),
    pytest.param(("run", *CSV_RUN, csv_files("textcell.csv")), "{tmp}/textcell.csv: feature column 'x' is not "
                 "numeric (data row 2 holds 'abc')", id="csv-text-cell"),
    pytest.param(("run", *CSV_RUN, csv_files("ragged.csv")), "{tmp}/ragged.csv: line 3 has 3 field(s), the header "
                 "has 2", id="csv-ragged-row"),
    pytest.param(("run", *CSV_RUN, csv_files("empty.csv")), "{tmp}/empty.csv is empty", id="csv-empty"),
    pytest.param(("run", *CSV_RUN, csv_files("twice.csv")), "{tmp}/twice.csv has duplicated columns ['x']",
                 id="csv-duplicated-header"),
    # benchmark suites take overrides too
    pytest.param(("bench", "gas", "batch_sizez=[1]", "--out", "{tmp}/bench"),
                 "unknown config key 'batch_sizez' (did you mean 'batch_sizes'?)", id="bench-unknown-key"),
    pytest.param(("bench", "throughput", "repeats=abc", "--out", "{tmp}/bench"),
                 "repeats must be an integer, got 'abc'", id="bench-type"),
    # run directories
    pytest.param(("verify", "{tmp}/runs/x"), "run directory {tmp}/runs/x does not exist", id="verify-missing-dir"),
    pytest.param(("verify", "{tmp}/a-file"), "{tmp}/a-file is not an fl-chain run directory (it is a file)",
                 id="verify-file"),
    pytest.param(("verify", "{tmp}/not-a-run"), "{tmp}/not-a-run is not an fl-chain run directory (no "
                 "federation.json)", id="verify-not-a-run"),
    pytest.param(("reproduce", "{tmp}/runs/x"), "run directory {tmp}/runs/x does not exist",
                 id="reproduce-missing-dir"),
    pytest.param(("reproduce", "{tmp}/not-a-run"), "{tmp}/not-a-run is not an fl-chain run directory (no "
                 "config.yaml)", id="reproduce-not-a-run"),
    pytest.param(("resume", "{tmp}/runs/x"), "run directory {tmp}/runs/x does not exist", id="resume-missing-dir"),
    pytest.param(("resume", "{tmp}/not-a-run"), "{tmp}/not-a-run is not an fl-chain run directory (no "
                 "config.yaml)", id="resume-not-a-run"),
    pytest.param(("reproduce", "{tmp}/unfinished"), "{tmp}/unfinished is an incomplete fl-chain run directory (no "
                 "summary.json)", id="reproduce-unfinished"),
]


@pytest.mark.parametrize(("arguments", "phrase"), CASES)
def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path: Path, arguments: tuple[str, ...], phrase: str) -> None:
    write_inputs(tmp_path)
    command = [argument.format(tmp=tmp_path) for argument in arguments]
    run_dir, sweep_dir = tmp_path / "run", tmp_path / "sweep"
    if command[0] == "run":
        command += [f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={sweep_dir}"]
    completed = flchain(*command)
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert len(lines) == 1, completed.stderr[-3000:]
    assert lines[0].startswith("flchain: error: ")
    assert phrase.format(tmp=tmp_path) in lines[0]
    assert "Traceback" not in completed.stdout + completed.stderr
    assert not (run_dir / "ledger").exists() and not (run_dir / "federation.json").exists()
    assert not sweep_dir.exists()  # a sweep is checked whole: no job started


def test_config_errors_leave_no_run_directory(tmp_path: Path) -> None:
    for override in ("roundz=3", "rounds=abc", "quorum=9"):
        completed = flchain("run", override, f"hydra.run.dir={tmp_path / 'run'}")
        assert completed.returncode == 2
        assert not (tmp_path / "run").exists()


def test_hydra_flags_still_work_anywhere_among_the_overrides(tmp_path: Path) -> None:
    for arguments in (("--cfg", "job", "rounds=3"), ("rounds=3", "--cfg", "job"), ("rounds=3", "-c", "job")):
        completed = flchain("run", *arguments, f"hydra.run.dir={tmp_path / 'run'}")
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "rounds: 3\n" in completed.stdout
    # printing a config is not running it: its values are not judged
    assert flchain("run", "--cfg", "job", "quorum=9").returncode == 0
    assert "  run:\n    dir: elsewhere\n" in flchain("run", "--cfg", "hydra", "hydra.run.dir=elsewhere").stdout
    helped = flchain("run", "--help")
    assert helped.returncode == 0 and "Powered by Hydra" in helped.stdout
