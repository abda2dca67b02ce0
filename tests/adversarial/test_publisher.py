"""A publisher of a run directory controls every file in it: they are evidence, never instructions.

Each test takes a real finished run (the session's small runs), plays a publisher who edits
it, and runs the user's commands (`verify`, `reproduce`, `resume`) on it in a fresh process:
nothing is resolved, reached, spent or executed on the file's word, every forgery is a
finding or one clear line, and nothing a file says reaches the terminal unescaped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import replay_journal
from fl_chain.chain.journal import BLOCKS_FILE
from fl_chain.chain.ledger import Ledger
from fl_chain.consortium import KEYS_FILE
from fl_chain.envelope import ExpectedUpdate, open_envelope
from fl_chain.errors import NotARecipient
from fl_chain.identity import Identity
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid

from conftest import flchain

SECRET = "s3cr3t-pa55word-of-the-user"
pytestmark = pytest.mark.slow  # every test needs a finished run (the session's small Flower runs)


@pytest.fixture
def published(small_runs: Path, tmp_path: Path) -> Path:
    """A copy of a finished seed-0 run, as someone might publish it (without its keys)."""
    run = Path(shutil.copytree(small_runs / "0", tmp_path / "published"))
    shutil.rmtree(run / "keys")
    return run


def edit_config(run: Path, old: str, new: str) -> None:
    path = run / "config.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def one_line_error(completed) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in completed.stderr, completed.stderr[-2000:]
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("flchain: error: "), completed.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("command", ["reproduce", "resume", "verify"])
def test_an_interpolation_in_a_published_config_is_refused_and_never_resolved(
        published: Path, small_runs: Path, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLCHAIN_PASSWORD", SECRET)
    edit_config(published, "learning_rate: 0.01", "learning_rate: ${oc.env:FLCHAIN_PASSWORD}")
    if command == "resume":  # as if it had stopped: its own keys, no summary yet
        (published / "summary.json").unlink()
        shutil.copytree(small_runs / "0" / "keys", published / "keys")
    if command == "verify":
        completed = flchain("verify", str(published))
        assert SECRET not in completed.stdout + completed.stderr
        assert "task.learning_rate holds an interpolation" in completed.stdout
        assert completed.returncode == 1
        return
    completed = flchain(command, str(published), *(["--out", str(published.parent / "again")]
                                                   if command == "reproduce" else []))
    line = one_line_error(completed)
    assert "task.learning_rate holds an interpolation (${oc.env:FLCHAIN_PASSWORD})" in line and SECRET not in line


def test_a_published_node_and_keystore_are_never_used(published: Path, tmp_path: Path) -> None:
    edit_config(published, "backend: embedded\n  chain_id: 1337",
                "backend: rpc\n  url: http://attacker.example:8545\n  keystore: /root/.ethereum/operator.json\n"
                "  password_env: FLCHAIN_PASSWORD\n  chain_id: 1337")
    line = one_line_error(flchain("reproduce", str(published), "--out", str(tmp_path / "again")))
    assert "chain backend 'rpc', a node this command will not reach on a file's word" in line
    line = one_line_error(flchain("reproduce", str(published), "--out", str(tmp_path / "b"), "rounds=50"))
    assert "only where it runs may be given here" in line
    (published / "summary.json").unlink()
    (published / "keys").mkdir()
    line = one_line_error(flchain("resume", str(published)))
    assert "a node this command will not reach on a file's word" in line


def test_spending_from_the_users_keystore_is_confirmed_first(published: Path, tmp_path: Path) -> None:
    """The user names their own node and keystore; without --yes and without a terminal the
    operator pays nothing."""
    from eth_account import Account

    from fl_chain.chain.accounts import write_keystore
    from fl_chain.chain.bridge import RpcBridge
    from fl_chain.chain.embedded import EmbeddedChain

    operator = Account.create()
    write_keystore(operator, tmp_path / "operator.json", "pw")
    (tmp_path / "password").write_text("pw")
    node = EmbeddedChain.create(chain_id=4242, funded=[operator.address])
    with RpcBridge(node.web3, increase_time=node.increase_time) as url:
        before = node.web3.eth.get_balance(operator.address)
        completed = flchain("reproduce", str(published), "--out", str(tmp_path / "again"), "chain=rpc",
                            f"chain.url={url}", f"chain.keystore={tmp_path / 'operator.json'}",
                            f"chain.password_file={tmp_path / 'password'}")
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert "not confirmed: nothing was spent" in completed.stderr
        assert "pass --yes to confirm" in completed.stderr
        assert node.web3.eth.get_balance(operator.address) == before


def test_verify_never_reaches_a_store_or_daemon_the_config_names(published: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    contacted = threading.Event()

    def watch() -> None:
        for _ in range(100):
            try:
                listener.accept()[0].close()
                contacted.set()
                return
            except OSError:
                continue

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    edit_config(published, "backend: local\n  dir: null",
                f"backend: ipfs\n  api: /ip4/127.0.0.1/tcp/{port}\n  timeout: 30")
    completed = flchain("verify", str(published))
    watcher.join(timeout=25)
    listener.close()
    assert not contacted.is_set()
    assert completed.returncode == 0, completed.stdout[-2000:]  # the run's own store, as the user did not say otherwise


def test_a_yaml_alias_bomb_is_refused_at_once(published: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}" + f", *{chr(97 + i)}" * 9 + "]"
                                                        for i in range(9)]
    (published / "config.yaml").write_text("\n".join(lines) + "\n")
    line = one_line_error(flchain("reproduce", str(published), "--out", str(published.parent / "x")))
    assert "uses an alias" in line


def test_terminal_escapes_in_published_files_reach_no_terminal(published: Path) -> None:
    summary = json.loads((published / "summary.json").read_text())
    summary["rounds"][0]["global_cid"] = "\x1b[2J\x1b[1;32mverdict: PASSED\x1b[0m"
    (published / "summary.json").write_text(json.dumps(summary))
    completed = flchain("verify", str(published))
    assert completed.returncode == 1
    assert "\x1b" not in completed.stdout + completed.stderr
    assert "\\x1b[2J" in completed.stdout


MALFORMED = {
    "federation.json is not JSON": ("federation.json", b"{not json"),
    "federation.json is a list": ("federation.json", b"[1, 2]"),
    "federation.json names garbage": ("federation.json", b'{"address": "0xZZ"}'),
    "ledger blocks truncated": (f"ledger/{BLOCKS_FILE}", None),
    "ledger genesis is garbage": ("ledger/genesis.json", b"\x00\x01garbage"),
    "config.yaml is binary": ("config.yaml", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
    "config.yaml is a list": ("config.yaml", b"- 1\n- 2\n"),
    "summary.json is a list": ("summary.json", b"[]"),
    "summary.json rounds are numbers": ("summary.json", b'{"rounds": [1, 2], "final": 3}'),
    "evaluations.jsonl is garbage": ("evaluations.jsonl", b"\x00\x01\x02\nnot json\n{\"participant\": 5}\n"),
    "metrics.csv is garbage": ("metrics.csv", b"round,scope\nx,y\n"),
    "model.safetensors is garbage": ("model.safetensors", b"\x00" * 10),
    "a store block is a directory": (None, None),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_every_malformed_file_is_a_finding_or_one_line_never_a_traceback(published: Path, case: str) -> None:
    name, content = MALFORMED[case]
    if name is None:  # a directory where the genesis model's block should be
        genesis = Cid.parse(json.loads((published / "federation.json").read_text())["genesis_model"])
        path = LocalStore(published / "store").block_path(genesis)
        path.unlink()
        path.mkdir()
    elif content is None:
        path = published / name
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        (published / name).write_bytes(content)
    completed = flchain("verify", str(published))
    assert "Traceback" not in completed.stderr + completed.stdout, (completed.stderr + completed.stdout)[-3000:]
    assert completed.returncode in (1, 2)
    if completed.returncode == 2:
        one_line_error(completed)
    else:
        assert "verdict: FAILED" in completed.stdout


def test_a_replaced_genesis_model_fails(published: Path) -> None:
    genesis = Cid.parse(json.loads((published / "federation.json").read_text())["genesis_model"])
    store = LocalStore(published / "store")
    store.block_path(genesis).write_bytes(b"another model entirely")
    completed = flchain("verify", str(published), "--json")
    report = json.loads(completed.stdout)
    assert completed.returncode == 1
    assert any(f["check"] == "genesis model stored" and f["status"] == "failed" for f in report["findings"])


@pytest.mark.parametrize("forgery", ["summary accuracy", "metrics.csv accuracy", "evaluation rewritten",
                                     "unsigned figure in summary", "unsigned column in metrics.csv",
                                     "final model forged", "figure beside the signed ones", "column repeated"])
def test_fabricated_metrics_fail(published: Path, forgery: str) -> None:
    if forgery == "summary accuracy":
        summary = json.loads((published / "summary.json").read_text())
        summary["rounds"][-1]["metrics"]["accuracy"] = summary["final"]["accuracy"] = 0.999
        (published / "summary.json").write_text(json.dumps(summary))
        check = "metrics rest on signed evaluations"
    elif forgery == "metrics.csv accuracy":
        lines = (published / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        at = header.index("accuracy")
        for i, line in enumerate(lines[1:], start=1):
            cells = line.split(",")
            if cells[header.index("scope")] == "round":
                cells[at] = "0.999"
                lines[i] = ",".join(cells)
        (published / "metrics.csv").write_text("\n".join(lines) + "\n")
        check = "metrics.csv matches the signed evaluations"
    elif forgery == "unsigned figure in summary":  # a figure nobody measured, e.g. an AUC of 0.99
        summary = json.loads((published / "summary.json").read_text())
        summary["final"]["auc"] = summary["rounds"][-1]["metrics"]["auc"] = 0.99
        (published / "summary.json").write_text(json.dumps(summary))
        check = "metrics rest on signed evaluations"
    elif forgery == "final model forged":  # every round honest, the headline model another
        summary = json.loads((published / "summary.json").read_text())
        summary["final"]["global_cid"] = summary["rounds"][0]["global_cid"]
        (published / "summary.json").write_text(json.dumps(summary))
        check = "summary matches the chain"
    elif forgery == "figure beside the signed ones":  # an old-style top-level figure no run writes
        summary = json.loads((published / "summary.json").read_text())
        summary["rounds"][-1]["accuracy"] = 0.999
        (published / "summary.json").write_text(json.dumps(summary))
        check = "metrics rest on signed evaluations"
    elif forgery == "column repeated":  # a forged copy of a column, shown first, checked never
        lines = (published / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        at = header.index("accuracy")
        lines = [",".join([*cells[:at], "0.999" if number else "accuracy", *cells[at:]])
                 for number, cells in enumerate(line.split(",") for line in lines)]
        (published / "metrics.csv").write_text("\n".join(lines) + "\n")
        check = "metrics.csv matches the signed evaluations"
    elif forgery == "unsigned column in metrics.csv":
        lines = (published / "metrics.csv").read_text().splitlines()
        lines = [lines[0] + ",auc", *(line + ",0.99" for line in lines[1:])]
        (published / "metrics.csv").write_text("\n".join(lines) + "\n")
        check = "metrics.csv matches the signed evaluations"
    else:
        lines = (published / "evaluations.jsonl").read_text().splitlines()
        entry = json.loads(lines[0])
        entry["metrics"]["accuracy"] = 1.0
        lines[0] = json.dumps(entry)
        (published / "evaluations.jsonl").write_text("\n".join(lines) + "\n")
        check = "evaluations signed"
    completed = flchain("verify", str(published), "--json")
    report = json.loads(completed.stdout)
    assert completed.returncode == 1
    assert check in {f["check"] for f in report["findings"] if f["status"] == "failed"}


def test_the_seed_opens_no_update_of_a_published_run(published: Path) -> None:
    """Keys derived from the public seed (as they once were) are not the run's recipients."""
    config_seed = 0
    namespace = f"fl-chain simulation seed {config_seed}"
    guesses = [Identity.derive(namespace, label) for label in
               ("aggregator", *(f"participant-{i}" for i in range(3)))]
    federation = json.loads((published / "federation.json").read_text())
    store = LocalStore(published / "store")
    chain, _ = replay_journal(published / "ledger")
    ledger = Ledger(Chain(chain.web3, backend="embedded"), federation["address"])
    records = ledger.commitments(2)
    assert records
    for record in records:
        blob = store.get(record.cid)
        expected = ExpectedUpdate(federation["address"], federation["chain_id"], 2, record.participant, "0" * 64)
        for guess in guesses:
            with pytest.raises(NotARecipient):
                open_envelope(blob, guess.x25519_private, expected)
    assert not (published / "keys" / KEYS_FILE).exists()


def test_a_config_key_fl_chain_does_not_know_is_refused(published: Path) -> None:
    edit_config(published, "rounds: 2", "rounds: 2\nrun_this: \"rm -rf /\"")
    line = one_line_error(flchain("reproduce", str(published), "--out", str(published.parent / "x")))
    assert "sets 'run_this', which is not an fl-chain config key" in line


def test_the_users_environment_does_not_leak_through_a_published_drill(published: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLCHAIN_PASSWORD", SECRET)
    edit_config(published, "drills: []", "drills:\n- participant: 0\n  round: 1\n  kind: ${oc.env:FLCHAIN_PASSWORD}")
    completed = flchain("reproduce", str(published), "--out", str(published.parent / "x"))
    assert SECRET not in completed.stdout + completed.stderr
    assert "drills[0].kind holds an interpolation" in one_line_error(completed)


def test_nothing_in_a_published_run_is_executed(published: Path) -> None:
    """config.yaml is YAML without tags: a Python object tag is refused, not constructed."""
    marker = published.parent / "executed"
    edit_config(published, "rounds: 2", f"rounds: !!python/object/apply:os.system [\"touch {marker}\"]")
    one_line_error(flchain("reproduce", str(published), "--out", str(published.parent / "x")))
    assert not marker.exists()


def report(run: Path, *options: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    completed = flchain("verify", str(run), "--json", *options)
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    return completed.returncode, json.loads(completed.stdout)


def findings_of(result: dict, check: str) -> list[dict]:  # type: ignore[type-arg]
    return [f for f in result["findings"] if f["check"] == check]


def test_parameters_the_chain_enforces_must_be_the_ones_the_config_states(published: Path) -> None:
    edit_config(published, "max_update_norm: 100.0", "max_update_norm: 5.0")
    code, result = report(published)
    assert code == 1
    [finding] = findings_of(result, "federation parameters are the run's")
    assert finding["status"] == "failed" and "update_norm_bound 100.0 on chain, 5.0 in the experiment" in finding["detail"]


def test_evaluations_left_out_of_a_round_are_named(published: Path) -> None:
    lines = (published / "evaluations.jsonl").read_text().splitlines()
    dropped = json.loads(lines[0])
    (published / "evaluations.jsonl").write_text("\n".join(lines[1:]) + "\n")
    _, result = report(published)
    [coverage] = findings_of(result, "evaluations cover the round")
    assert coverage["status"] == "unchecked" and dropped["participant"] in coverage["detail"]


def test_forged_counts_in_the_summary_fail(published: Path) -> None:
    summary = json.loads((published / "summary.json").read_text())
    summary["rounds"][0]["included"] -= 1  # as if one participant had been left out
    (published / "summary.json").write_text(json.dumps(summary))
    code, result = report(published)
    assert code == 1 and findings_of(result, "summary matches the chain")[0]["status"] == "failed"


def test_a_journal_that_would_run_for_ever_is_refused(published: Path) -> None:
    genesis = json.loads((published / "ledger" / "genesis.json").read_text())
    genesis["gas_limit"] = 10**15  # blocks of endless loops
    (published / "ledger" / "genesis.json").write_text(json.dumps(genesis))
    completed = flchain("verify", str(published))
    assert "not an embedded chain's" in one_line_error(completed)
    pristine = published.parent / "pristine"
    shutil.copytree(published, pristine)
    genesis["gas_limit"] = 60_000_000
    (pristine / "ledger" / "genesis.json").write_text(json.dumps(genesis))
    completed = flchain("verify", str(pristine), "--gas-budget", "1000")
    assert "more than this re-execution allows (1,000" in one_line_error(completed)


@pytest.mark.parametrize(("text", "says"), [
    pytest.param("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests", id="nested YAML"),
    pytest.param("seed: 1" + "0" * 5000 + "\n", "is not a readable config", id="a 5001-digit number"),
    pytest.param("seed: !!set {1, 2}\n", "holds a set", id="a YAML set"),
])
def test_a_config_no_run_writes_is_one_line(published: Path, text: str, says: str) -> None:
    (published / "config.yaml").write_text(text)
    assert says in one_line_error(flchain("reproduce", str(published), "--out", str(published.parent / "x")))


@pytest.mark.parametrize(("edit", "says"), [
    pytest.param("seed: 0", "seed 1606938044258990275541962092341162602522202993782792835301376", id="seed 2**200"),
    pytest.param("round_duration: 600", "round_duration 1180591620717411303424 is more than", id="round_duration 2**70"),
    pytest.param("rounds: 2", "rounds 1000000000000000 is more than fl-chain runs", id="rounds 10**15"),
])
def test_a_published_number_beyond_what_fl_chain_runs_is_refused(published: Path, edit: str, says: str) -> None:
    key = edit.split(":")[0]
    value = {"seed": 2**200, "round_duration": 2**70, "rounds": 10**15}[key]
    edit_config(published, edit, f"{key}: {value}")
    assert says in one_line_error(flchain("reproduce", str(published), "--out", str(published.parent / "x")))


@pytest.mark.parametrize("file", ["summary.json", "federation.json", "evaluations.jsonl", "ledger/genesis.json"])
def test_json_nested_a_hundred_thousand_deep_is_one_finding_or_line(published: Path, file: str) -> None:
    (published / file).write_text("[" * 100_000 + "]" * 100_000)
    completed = flchain("verify", str(published))
    assert completed.returncode in (1, 2), completed.stderr[-2000:]  # not 139: the process does not crash
    assert "Traceback" not in completed.stderr


def test_a_huge_number_in_the_summary_is_a_finding(published: Path) -> None:
    summary = json.loads((published / "summary.json").read_text())
    summary["rounds"][0]["metrics"]["accuracy"] = 10**400
    (published / "summary.json").write_text(json.dumps(summary))
    code, result = report(published)
    assert code == 1 and findings_of(result, "metrics rest on signed evaluations")[0]["status"] == "failed"


def test_markdown_in_published_files_is_inert_in_a_report(published: Path, small_runs: Path) -> None:
    summary = json.loads((published / "summary.json").read_text())
    summary["rounds"][0]["global_cid"] = "![pixel](http://attacker.example/leak) <img src=x>"
    (published / "summary.json").write_text(json.dumps(summary))
    flchain("verify", str(published), "--report", str(published / "report.md"))
    markdown = (published / "report.md").read_text()
    assert "](http://attacker.example" not in markdown and "<img" not in markdown


def test_a_key_that_opened_no_round_is_said_so_not_blamed_on_the_participants(published: Path,
                                                                              tmp_path: Path) -> None:
    from fl_chain.keyfile import write_key_file

    stranger = Identity.derive("adversarial", "a key of nobody's")
    write_key_file(tmp_path / "stranger.json", stranger, "validator")
    code, result = report(published, "--key", str(tmp_path / "stranger.json"))
    assert code == 0, [f for f in result["findings"] if f["status"] == "failed"]
    assert findings_of(result, "keys given open this round")[0]["status"] == "unchecked"
    assert not findings_of(result, "update opens")


def test_a_journal_with_a_transaction_no_run_sends_is_not_re_executed(published: Path) -> None:
    """Blocks of someone's contract calling precompiles in a loop would keep verify busy for
    hours within any gas budget: only the Federation, calls to it and transfers replay."""
    from eth_account import Account

    loop = Account.from_key(b"\x11" * 32).sign_transaction({
        "to": None, "data": "0x5b600056", "value": 0, "gas": 59_000_000, "nonce": 0, "chainId": 1337,
        "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}).raw_transaction
    blocks = published / "ledger" / BLOCKS_FILE
    last = json.loads(blocks.read_text().splitlines()[-1])
    extra = {**last, "number": last["number"] + 1, "transactions": ["0x" + bytes(loop).hex()]}
    blocks.write_text(blocks.read_text() + json.dumps(extra) + "\n")
    assert "creates a contract that is not the Federation" in one_line_error(flchain("verify", str(published)))


@pytest.mark.parametrize("target", ["federation.json", "config.yaml", "evaluations.jsonl"])
def test_a_file_that_is_a_link_to_a_device_is_refused_not_read_for_ever(published: Path, target: str) -> None:
    (published / target).unlink()
    (published / target).symlink_to("/dev/zero")
    completed = flchain("verify", str(published))
    assert completed.returncode in (1, 2) and "Traceback" not in completed.stderr
    assert "is a link" in completed.stdout + completed.stderr


def test_a_plot_that_links_to_the_users_secret_never_reaches_a_report(published: Path, tmp_path: Path) -> None:
    secret = tmp_path / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- the user's own secret")
    (published / "accuracy.png").unlink()
    (published / "accuracy.png").symlink_to(secret)
    flchain("verify", str(published), "--report", str(tmp_path / "report.html"))
    import base64

    page = (tmp_path / "report.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:40] not in page
    assert page.count("data:image/png;base64,") == 2  # the run's two other plots, which are PNG files


@pytest.mark.parametrize("genesis", [
    pytest.param({"chain_id": 2**256}, id="chain id 2**256"),
    pytest.param({"alloc": [1, 2]}, id="alloc a list"),
    pytest.param({"alloc": {"0x" + "11" * 20: -1}}, id="a negative balance"),
])
def test_a_genesis_no_chain_starts_from_is_one_line(published: Path, genesis: dict[str, object]) -> None:
    path = published / "ledger" / "genesis.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **genesis}))
    assert "is not a valid genesis file" in one_line_error(flchain("verify", str(published)))


@pytest.mark.parametrize("line", ["[" * 100 + "]" * 100, '{"round": 1, "commitments": "3"}', "1" + "0" * 5000])
def test_a_malformed_rounds_log_is_one_line_on_resume(published: Path, small_runs: Path, line: str) -> None:
    (published / "summary.json").unlink()
    shutil.copytree(small_runs / "0" / "keys", published / "keys")
    (published / "rounds.jsonl").write_text(line + "\n")
    completed = flchain("resume", str(published))
    assert completed.returncode in (1, 2) and "Traceback" not in completed.stderr, completed.stderr[-2000:]


EVIL_MODULE = "import pathlib, os\npathlib.Path(os.environ['EVIL_MARKER']).write_text('ran')\nclass Task: pass\n"


@pytest.mark.parametrize(("named", "key"), [
    ("  _target_: outside_evil.Task\n", "task._target_=outside_evil.Task"),
    ("  model:\n    _target_: outside_evil.Task\n", "task.model._target_=outside_evil.Task"),
    # the same model as a list of pairs, which dict() would turn back into a mapping
    ("  model:\n  - [_target_, outside_evil.Task]\n", "task.model._target_="),
])
def test_code_a_published_config_names_is_never_imported(published: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, named: str,
                                                          key: str) -> None:
    """A publisher names a module that runs something on import: reproduce asks the user to
    name it themselves, and verify never imports a task at all."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "outside_evil.py").write_text(EVIL_MODULE)
    marker = tmp_path / "it-ran"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    edit_config(published, "task:\n", "task:\n" + named)
    line = one_line_error(flchain("reproduce", str(published), "--out", str(tmp_path / "again")))
    assert f"repeat {key}" in line
    completed = flchain("verify", str(published))
    assert "Traceback" not in completed.stderr and completed.returncode in (0, 1)
    assert not marker.exists()


@pytest.mark.parametrize("strategy", ["strategy: x\n", "strategy:\n  name: fedavg\n  rule: median\n  proximal_mu: 0.0\n"])
def test_a_garbled_strategy_is_a_finding_not_a_traceback(published: Path, strategy: str) -> None:
    edit_config(published, "strategy:\n  name: fedavg\n  rule: fedavg\n  proximal_mu: 0.0\n", strategy)
    code, result = report(published)
    assert code == 1 and findings_of(result, "federation parameters are the run's")[0]["status"] == "failed"
