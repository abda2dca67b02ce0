"""`flchain verify`: an honest run passes; every kind of tampering is caught and named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fl_chain.chain.journal import BLOCKS_FILE
from fl_chain.cli import main
from fl_chain.identity import Identity
from fl_chain.keyfile import write_key_file
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["verify", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def failures(report: dict) -> list[dict]:  # type: ignore[type-arg]
    return [f for f in report["findings"] if f["status"] == "failed"]


@pytest.fixture
def run_copy(small_runs: Path, tmp_path: Path) -> Path:
    """A private copy of the seed-0 run to tamper with."""
    return Path(shutil.copytree(small_runs / "0", tmp_path / "run"))


def update_cids(capsys: pytest.CaptureFixture[str], run_dir: Path, round_number: int) -> list[tuple[str, Cid]]:
    _, report = verify(capsys, str(run_dir))
    [lineage] = [r for r in report["rounds"] if r["round"] == round_number]
    return [(c["participant"], Cid.parse(c["cid"])) for c in lineage["commitments"]]


def test_an_honest_run_passes_every_check_with_a_key(small_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = small_runs / "0"
    code, report = verify(capsys, str(run_dir), "--key", str(run_dir / "keys" / "validator-0.json"))
    assert code == 0 and report["ok"] and failures(report) == []
    checks = {f["check"] for f in report["findings"]}
    assert {"chain journal re-executes", "contract code is the shipped artifact", "member", "before deadline",
            "once", "blob matches its CID", "header matches commitment", "update opens", "re-aggregation",
            "commitments accounted for", "quorum", "attestations reached the threshold", "final model file", "summary matches the chain",
            "federation parameters are the run's"} <= checks
    assert [r["accepted"] for r in report["rounds"]] == [True, True]
    training = sum(r["seconds"] for r in json.loads((run_dir / "summary.json").read_text())["rounds"])
    assert report["seconds"] < training, "verifying must take less time than training did"


def test_without_a_key_it_says_what_it_could_not_check(small_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", str(small_runs / "0")])
    out = capsys.readouterr().out
    assert code == 0
    assert "· re-aggregation" in out
    assert out.strip().splitlines()[-1].startswith("verdict: PASSED")
    assert "not checked: re-aggregation" in out


@pytest.mark.parametrize("case", ["flipped byte", "deleted blob", "swapped blobs"])
def test_store_tampering_is_detected(run_copy: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    updates = update_cids(capsys, run_copy, 2)
    store = LocalStore(run_copy / "store")
    (first, first_cid), (second, second_cid) = updates[0], updates[1]
    first_path, second_path = store.block_path(first_cid), store.block_path(second_cid)
    if case == "flipped byte":
        data = bytearray(first_path.read_bytes())
        data[len(data) // 2] ^= 0x01
        first_path.write_bytes(bytes(data))
        expected = {first}
    elif case == "deleted blob":
        first_path.unlink()
        expected = {first}
    else:
        first_bytes, second_bytes = first_path.read_bytes(), second_path.read_bytes()
        first_path.write_bytes(second_bytes)
        second_path.write_bytes(first_bytes)
        expected = {first, second}
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    blob_failures = [f for f in failures(report) if f["check"] == "blob matches its CID"]
    assert {f["participant"] for f in blob_failures} == expected
    assert all(f["round"] == 2 for f in blob_failures)
    assert all(str(first_cid) in f["detail"] or str(second_cid) in f["detail"] for f in blob_failures)


def edit_journal(run_dir: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path = run_dir / "ledger" / BLOCKS_FILE
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


def edit_last_transaction(lines: list[str]) -> list[str]:
    record = json.loads(lines[-1])
    raw = record["transactions"][0]
    record["transactions"][0] = raw[:-80] + ("1" if raw[-80] == "0" else "0") + raw[-79:]
    return [*lines[:-1], json.dumps(record)]


@pytest.mark.parametrize(("edit", "says"), [
    pytest.param(lambda lines: [*lines[:5], *lines[6:]], "block 6 is missing", id="dropped"),
    pytest.param(lambda lines: [*lines[:5], lines[6], lines[5], *lines[7:]], "block 6 is missing", id="reordered"),
    pytest.param(edit_last_transaction, "block", id="edited"),
])
def test_ledger_tampering_is_detected(run_copy: Path, capsys: pytest.CaptureFixture[str], edit, says: str) -> None:  # type: ignore[no-untyped-def]
    edit_journal(run_copy, edit)
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    journal = [f for f in failures(report) if f["check"] == "chain journal re-executes"]
    assert journal and says in journal[0]["detail"]


def test_replaced_final_model_is_detected(run_copy: Path, small_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(small_runs / "1" / "model.safetensors", run_copy / "model.safetensors")
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    [failure] = failures(report)
    assert failure["check"] == "final model file"
    summary = json.loads((run_copy / "summary.json").read_text())
    assert failure["expected"] == summary["final"]["global_cid"]


def test_a_key_that_is_not_a_recipient_is_named(small_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = tmp_path / "stranger.json"
    write_key_file(stranger, Identity.derive("not in this federation", "auditor"), "validator")
    code, report = verify(capsys, str(small_runs / "0"), "--key", str(stranger))
    assert code == 0  # a key that opens nothing proves nothing either way: it is named, nobody is blamed
    named = [f for f in report["findings"] if f["check"] == "keys given open this round"]
    assert [f["status"] for f in named] == ["unchecked", "unchecked"]
    assert all("none of the keys given was a recipient of round" in f["detail"] for f in named)
    assert not [f for f in report["findings"] if f["check"] == "update opens"]


def test_files_from_another_run_are_detected(run_copy: Path, small_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(small_runs / "1" / "summary.json", run_copy / "summary.json")
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    # its models, and the figures it claims for them, are another run's
    assert [f["check"] for f in failures(report)] == ["summary matches the chain", "metrics rest on signed evaluations"]

    shutil.rmtree(run_copy / "store")
    shutil.copytree(small_runs / "1" / "store", run_copy / "store")
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    assert {f["check"] for f in failures(report)} >= {"blob matches its CID", "global model stored"}


def test_a_ledger_from_another_run_is_named(run_copy: Path, small_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(run_copy / "ledger")
    shutil.copytree(small_runs / "1" / "ledger", run_copy / "ledger")
    code = main(["verify", str(run_copy)])
    assert code == 2
    assert "federation.json and the chain's records come from different runs" in capsys.readouterr().err


def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2
    assert "is not an fl-chain run directory" in capsys.readouterr().err


def test_report_files(small_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = small_runs / "0"
    key = str(run_dir / "keys" / "aggregator.json")
    assert main(["verify", str(run_dir), "--key", key, "--report", str(tmp_path / "report.html")]) == 0
    assert main(["verify", str(run_dir), "--key", key, "--report", str(tmp_path / "report.md")]) == 0
    capsys.readouterr()
    page = (tmp_path / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "Lineage of the final model" in page and summary["final"]["global_cid"] in page
    assert page.count("data:image/png;base64,") == 3
    markdown = (tmp_path / "report.md").read_text()
    assert "| round | base model |" in markdown and "verdict: PASSED" in markdown


def test_an_unreadable_federation_file_is_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "federation.json").write_text("not json")
    assert main(["verify", str(tmp_path)]) == 2
    assert "federation file" in capsys.readouterr().err
    (tmp_path / "federation.json").write_text('{"chain_id": 1}')
    assert main(["verify", str(tmp_path)]) == 2
    assert "names no federation address" in capsys.readouterr().err


def test_a_damaged_config_is_a_finding(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / "config.yaml").write_text(": : [\n")
    code, report = verify(capsys, str(run_copy))
    assert code == 1
    [failure] = failures(report)
    assert failure["check"] == "federation parameters are the run's"
    assert failure["detail"].startswith("config.yaml cannot be read")
