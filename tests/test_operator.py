"""Operating a federation on a real chain: deploy, members, status, funding, and bad input.

Every bad input must be one `flchain: error:` line with exit code 2, and must be caught
before a transaction: the operator's nonce does not move.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from fl_chain.chain import rpc
from fl_chain.chain.accounts import KeystoreError, write_keystore
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.artifacts import NAIVE_REGISTRY
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.errors import InsufficientFunds, WrongChain
from fl_chain.chain.federation import FederationParameters, Role
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.operator import RpcSettings, connect_operator, fund_accounts
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.unixfs import cid_of

from conftest import flchain

PASSWORD = "correct horse battery staple"
EXPERIMENT = ["task=breast_cancer", "num_participants=3", "quorum=2", "num_validators=2", "attestation_threshold=2"]


def identity(label: str) -> Identity:
    return Identity.derive("operator tests", label)


@dataclass(frozen=True)
class Operator:
    identity: Identity
    keystore: Path

    @property
    def address(self) -> str:
        return self.identity.address


def make_operator(directory: Path, label: str, chain: Chain) -> Operator:
    operator = Operator(identity(label), directory / f"{label}.json")
    write_keystore(operator.identity.account, operator.keystore, PASSWORD)
    rpc.fund(chain, [operator.address])
    return operator


@pytest.fixture(scope="module")
def node(anvil_node: AnvilNode) -> Chain:
    return rpc.connect(anvil_node.url)


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory, node: Chain) -> Operator:
    return make_operator(tmp_path_factory.mktemp("keys"), "admin", node)


@pytest.fixture(scope="module")
def federation_path(tmp_path_factory: pytest.TempPathFactory, anvil_node: AnvilNode, operator: Operator) -> Path:
    path = tmp_path_factory.mktemp("deployment") / "fed" / "federation.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLCHAIN_PASSWORD", PASSWORD)
        completed = flchain("deploy", "--out", str(path), "chain=rpc", f"chain.url={anvil_node.url}",
                            f"chain.keystore={operator.keystore}", *EXPERIMENT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return path


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLCHAIN_PASSWORD", PASSWORD)


def assert_bad_input(completed, message: str) -> None:  # type: ignore[no-untyped-def]
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flchain: error: "), completed.stderr
    assert message in lines[0], lines[0]


# ---------------------------------------------------------------- deploy, members, status


@pytest.mark.anvil
def test_deploy_writes_a_federation_file_members_and_aggregators_can_load(
    federation_path: Path, anvil_node: AnvilNode, operator: Operator, node: Chain
) -> None:
    from aggregator.config import compose_experiment
    from fl_chain.chain.federation import task_hash

    federation = FederationFile.read(federation_path)
    chain_overrides = ["chain=rpc", f"chain.url={anvil_node.url}", f"chain.keystore={operator.keystore}"]
    assert federation.parameters.task_hash == task_hash(compose_experiment([*chain_overrides, *EXPERIMENT]))
    assert federation.parameters.quorum == 2 and federation.parameters.attestation_threshold == 2
    assert federation.admin == operator.address and federation.chain_id == anvil_node.chain_id
    assert federation.deployed_block is not None and federation.deployed_block <= node.web3.eth.block_number
    genesis = (federation_path.parent / "genesis.safetensors").read_bytes()
    assert cid_of(genesis) == federation.genesis_model
    assert LocalStore(federation_path.parent / "store").get(federation.genesis_model) == genesis
    ledger = federation.attach(node)
    assert ledger.address == federation.address and ledger.admin() == operator.address


@pytest.mark.anvil
def test_members_add_list_remove_and_status_read_the_chain(
    federation_path: Path, anvil_node: AnvilNode, operator: Operator, node: Chain, password: None, tmp_path: Path
) -> None:
    where = ["--federation", str(federation_path), "--url", anvil_node.url]
    as_admin = [*where, "--keystore", str(operator.keystore)]
    hospital, aggregator = identity("hospital"), identity("aggregator")
    added = flchain("members", "add", *as_admin, "--address", hospital.address,
                    "--x25519", hospital.x25519_public.hex(), "--roles", "participant,validator")
    assert added.returncode == 0, added.stderr
    card = tmp_path / "aggregator-card.json"
    card.write_text(json.dumps({"address": aggregator.address, "x25519": aggregator.x25519_public.hex()}))
    appointed = flchain("members", "add", *as_admin, "--card", str(card), "--roles", "aggregator", "--aggregator")
    assert appointed.returncode == 0, appointed.stderr
    assert f"appointed {aggregator.address} as the aggregator" in appointed.stdout

    listed = flchain("members", "list", *where)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split() == ["index", "address", "roles", "active", "x25519"]
    assert rows[0].split() == ["0", hospital.address, "participant,validator", "yes", hospital.x25519_public.hex()[:8] + "…"]
    assert rows[1].split()[1:4] == [aggregator.address, "aggregator", "yes"]

    removed = flchain("members", "remove", *as_admin, "--address", hospital.address)
    assert removed.returncode == 0, removed.stderr
    members = json.loads(flchain("members", "list", *where, "--json").stdout)
    assert [(m["address"], m["roles"], m["active"]) for m in members] == [
        (hospital.address, ["participant", "validator"], False), (aggregator.address, ["aggregator"], True)]

    federation = FederationFile.read(federation_path)
    rpc.fund(node, [aggregator.address])
    Ledger(node, federation.address).open_round(aggregator.account, 1, federation.genesis_model)
    status = json.loads(flchain("status", *where, "--json").stdout)
    assert status["federation"]["aggregator"] == aggregator.address
    assert status["federation"]["admin"] == operator.address
    assert status["federation"]["latest_accepted"] == {"round": 0, "global_model": str(federation.genesis_model)}
    assert [m["active"] for m in status["members"]] == [False, True]
    [opened] = status["rounds"]
    assert (opened["round"], opened["status"], opened["attempt"], opened["commitments"]) == (1, "open", 1, 0)
    shown = flchain("status", *where)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"federation {federation.address} on chain {anvil_node.chain_id}")
    assert "members: 2, 1 active" in shown.stdout and "rounds: 1" in shown.stdout
    round_table = shown.stdout.split("rounds: 1\n")[1].splitlines()
    assert round_table[0].split()[:3] == ["round", "status", "attempt"]
    assert round_table[1].split()[:4] == ["1", "open", "1", "0"]


# ---------------------------------------------------------------- bad input, before any transaction


def _deploy_args(url: str, keystore: Path, out: Path, *extra: str) -> list[str]:
    return ["deploy", "--out", str(out), "chain=rpc", f"chain.url={url}", f"chain.keystore={keystore}",
            *EXPERIMENT, *extra]


@pytest.mark.anvil
@pytest.mark.parametrize("case", ["missing keystore", "wrong password (env)", "wrong password (file)",
                                  "password variable unset", "unreachable URL", "chain id mismatch"])
def test_bad_deploy_input_is_one_line_and_sends_nothing(
    case: str, anvil_node: AnvilNode, operator: Operator, node: Chain, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLCHAIN_PASSWORD", PASSWORD)
    (tmp_path / "wrong-password").write_text("Tr0ub4dor&3\n")
    url, keystore, extra = anvil_node.url, operator.keystore, []
    if case == "missing keystore":
        keystore, message = tmp_path / "absent.json", f"keystore file {tmp_path / 'absent.json'} does not exist"
    elif case == "wrong password (env)":
        monkeypatch.setenv("FLCHAIN_PASSWORD", "Tr0ub4dor&3")
        message = f"wrong password for keystore {keystore}"
    elif case == "wrong password (file)":
        extra, message = [f"chain.password_file={tmp_path / 'wrong-password'}"], f"wrong password for keystore {keystore}"
    elif case == "password variable unset":
        monkeypatch.delenv("FLCHAIN_PASSWORD")
        message = "the keystore password variable FLCHAIN_PASSWORD is not set"
    elif case == "unreachable URL":
        url, message = "http://127.0.0.1:9", "no Ethereum node answers at http://127.0.0.1:9"
    else:
        extra, message = ["chain.chain_id=5"], f"serves chain {anvil_node.chain_id}, not the expected chain 5"
    nonce = node.web3.eth.get_transaction_count(operator.address)
    completed = flchain(*_deploy_args(url, keystore, tmp_path / "federation.json", *extra))
    assert_bad_input(completed, message)
    assert node.web3.eth.get_transaction_count(operator.address) == nonce
    assert not (tmp_path / "federation.json").exists()


@pytest.mark.anvil
def test_a_federation_file_that_names_no_federation_is_refused(
    federation_path: Path, anvil_node: AnvilNode, operator: Operator, node: Chain, tmp_path: Path, password: None
) -> None:
    federation = FederationFile.read(federation_path)
    registry = node.deploy(operator.identity.account, NAIVE_REGISTRY.abi, NAIVE_REGISTRY.bytecode)["contractAddress"]
    variants = {
        "an account": (replace(federation, address=identity("someone").address), "no contract at"),
        "another contract": (replace(federation, address=registry), "is not this version of the Federation contract"),
        "another chain": (replace(federation, chain_id=5), f"serves chain {anvil_node.chain_id}, not the expected chain 5"),
        "other parameters": (replace(federation, parameters=replace(federation.parameters, quorum=3)),
                             "has quorum 2 on chain, the federation file says 3"),
    }
    nonce = node.web3.eth.get_transaction_count(operator.address)
    for name, (variant, message) in variants.items():
        path = tmp_path / f"{name}.json"
        variant.write(path)
        assert_bad_input(flchain("status", "--federation", str(path), "--url", anvil_node.url), message)
        hospital = identity("late hospital")
        assert_bad_input(flchain("members", "add", "--federation", str(path), "--url", anvil_node.url,
                                 "--keystore", str(operator.keystore), "--address", hospital.address,
                                 "--x25519", hospital.x25519_public.hex(), "--roles", "participant"), message)
    assert node.web3.eth.get_transaction_count(operator.address) == nonce


@pytest.mark.anvil
def test_members_add_refuses_a_keystore_that_is_not_the_admin(
    federation_path: Path, anvil_node: AnvilNode, node: Chain, tmp_path: Path, password: None
) -> None:
    stranger = make_operator(tmp_path, "stranger", node)
    hospital = identity("hospital of a stranger")
    completed = flchain("members", "add", "--federation", str(federation_path), "--url", anvil_node.url,
                        "--keystore", str(stranger.keystore), "--address", hospital.address,
                        "--x25519", hospital.x25519_public.hex(), "--roles", "participant")
    assert_bad_input(completed, f"holds {stranger.address}, not the admin of")
    assert node.web3.eth.get_transaction_count(stranger.address) == 0


@pytest.mark.anvil
def test_members_add_reads_the_password_from_a_file_and_refuses_a_wrong_one(
    federation_path: Path, anvil_node: AnvilNode, operator: Operator, node: Chain, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text("not it\n")
    hospital = identity("hospital with a password file")
    nonce = node.web3.eth.get_transaction_count(operator.address)
    completed = flchain("members", "add", "--federation", str(federation_path), "--url", anvil_node.url,
                        "--keystore", str(operator.keystore), "--password-file", str(tmp_path / "password"),
                        "--address", hospital.address, "--x25519", hospital.x25519_public.hex(), "--roles", "participant")
    assert_bad_input(completed, f"wrong password for keystore {operator.keystore}")
    assert node.web3.eth.get_transaction_count(operator.address) == nonce


@pytest.mark.parametrize(("arguments", "message"), [
    (["--address", "0x1234", "--x25519", "ab" * 32, "--roles", "participant"], "--address is not an Ethereum address"),
    (["--address", "0x" + "12" * 20, "--x25519", "ab" * 31, "--roles", "participant"], "--x25519 must be an X25519"),
    (["--address", "0x" + "12" * 20, "--x25519", "ab" * 32, "--roles", "participant,boss"], "unknown role 'boss'"),
    (["--address", "0x" + "12" * 20, "--x25519", "ab" * 32, "--roles", "participant", "--aggregator"],
     "--aggregator needs the aggregator role"),
    (["--roles", "participant"], "name the member with --address and --x25519, or with --card FILE"),
])
def test_member_details_are_checked_before_anything_else(arguments: list[str], message: str, tmp_path: Path) -> None:
    completed = flchain("members", "add", "--federation", str(tmp_path / "f.json"), "--url", "http://127.0.0.1:9",
                        "--keystore", str(tmp_path / "k.json"), *arguments)
    assert_bad_input(completed, message)


def test_federation_files_round_trip_and_read_what_a_run_wrote(tmp_path: Path) -> None:
    parameters = FederationParameters(bytes(range(32)), 0, 2, 600, 2)
    written = FederationFile("0x" + "12" * 20, 31337, "ab" * 32, parameters, cid_of(b"genesis"),
                             admin="0x" + "34" * 20, deployed_block=7)
    written.write(tmp_path / "deep" / "federation.json")
    read = FederationFile.read(tmp_path / "deep" / "federation.json")
    assert read == replace(written, address=to_checksum_address(written.address),
                           admin=to_checksum_address("0x" + "34" * 20))
    run_file = {key: value for key, value in written.to_json().items() if key not in ("format", "admin", "deployed_block")}
    run_file["members"] = [{"address": "0x" + "12" * 20, "index": 0, "roles": "PARTICIPANT"}]
    (tmp_path / "run.json").write_text(json.dumps(run_file))
    assert FederationFile.read(tmp_path / "run.json") == replace(read, admin=None, deployed_block=None)


def test_a_malformed_federation_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "federation.json"
    path.write_text(json.dumps({"address": "0x" + "12" * 20, "chain_id": 1}))
    with pytest.raises(UsageError, match=f"federation file {path} is malformed: lacks 'parameters'"):
        FederationFile.read(path)
    with pytest.raises(UsageError, match="does not exist"):
        FederationFile.read(tmp_path / "absent.json")
    path.write_text(json.dumps({"format": "fl-chain-federation/9"}))
    with pytest.raises(UsageError, match="malformed: format 'fl-chain-federation/9' is not"):
        FederationFile.read(path)


# ---------------------------------------------------------------- the run's operator


@pytest.fixture
def bridged_chain(tmp_path: Path) -> Iterator[tuple[Chain, Identity]]:
    """A chain that is not anvil (the embedded EVM over JSON-RPC), with a funded operator."""
    operator = identity("bridge operator")
    embedded = EmbeddedChain.create(funded=[operator.address], balance=10**18)
    bridge = RpcBridge(embedded.web3)
    chain = rpc.connect(bridge.start(), on_close=bridge.stop)
    yield chain, operator
    chain.close()


def test_the_operator_tops_up_the_run_accounts_by_transfers(bridged_chain: tuple[Chain, Identity]) -> None:
    chain, operator = bridged_chain
    accounts = [identity(f"run account {i}").address for i in range(3)]
    fund_accounts(chain, operator.account, accounts, 10**17)
    assert [chain.web3.eth.get_balance(a) for a in accounts] == [10**17] * 3
    nonce = chain.web3.eth.get_transaction_count(operator.address)
    fund_accounts(chain, operator.account, accounts, 10**17)  # already funded: nothing to send
    assert chain.web3.eth.get_transaction_count(operator.address) == nonce
    with pytest.raises(InsufficientFunds, match=f"the operator {operator.address} holds 0.69"):
        fund_accounts(chain, operator.account, [identity("one more").address], 10**18)
    assert chain.web3.eth.get_transaction_count(operator.address) == nonce
    with pytest.raises(UsageError, match="name the operator's keystore with chain.keystore=FILE"):
        fund_accounts(chain, None, accounts, 10**18)


def test_the_rpc_config_group_is_checked_without_the_network(tmp_path: Path) -> None:
    base = {"backend": "rpc", "url": "http://127.0.0.1:8545", "chain_id": None, "keystore": None,
            "password_env": "FLCHAIN_PASSWORD", "password_file": None, "fund_ether": 0.5, "retry_seconds": 60}
    assert RpcSettings.from_config(base).fund_wei == 5 * 10**17
    problems = {
        "url": ("localhost:8545", "chain.url must be an http:// or https:// URL"),
        "fund_ether": (-1, "chain.fund_ether must be an amount of ether >= 0"),
        "retry_seconds": ("soon", "chain.retry_seconds must be a number of seconds"),
        "chain_id": (0, "chain.chain_id must be a positive integer or null"),
    }
    for key, (value, message) in problems.items():
        with pytest.raises(UsageError, match=message):
            RpcSettings.from_config({**base, key: value})
    with pytest.raises(KeystoreError, match="keystore file .* does not exist"):
        RpcSettings.from_config({**base, "keystore": str(tmp_path / "absent.json")})


@pytest.mark.anvil
def test_connect_operator_unlocks_the_keystore_and_checks_the_chain(
    anvil_node: AnvilNode, operator: Operator, password: None
) -> None:
    config = {"url": anvil_node.url, "chain_id": anvil_node.chain_id, "keystore": str(operator.keystore)}
    chain, account = connect_operator(config)
    assert chain.chain_id == anvil_node.chain_id and account is not None and account.address == operator.address
    with pytest.raises(WrongChain):
        connect_operator({**config, "chain_id": 5})


@pytest.mark.slow
@pytest.mark.anvil
def test_a_run_on_an_rpc_chain_with_a_wrong_password_stops_before_any_transaction(
    anvil_node: AnvilNode, operator: Operator, node: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLCHAIN_PASSWORD", "not the password")
    nonce = node.web3.eth.get_transaction_count(operator.address)
    completed = flchain("run", "chain=rpc", f"chain.url={anvil_node.url}", f"chain.keystore={operator.keystore}",
                        *EXPERIMENT, "rounds=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == f"flchain: error: wrong password for keystore {operator.keystore}"
    assert node.web3.eth.get_transaction_count(operator.address) == nonce
    assert not (tmp_path / "run" / "federation.json").exists()


def test_roles_are_registered_as_the_contract_numbers_them() -> None:
    from fl_chain.commands.members import parse_roles, role_names

    assert parse_roles("participant,validator") == Role.PARTICIPANT | Role.VALIDATOR
    assert role_names(Role.AGGREGATOR | Role.PARTICIPANT) == "participant,aggregator"


@pytest.mark.slow
def test_a_run_on_a_node_that_is_not_anvil_is_paid_for_by_the_operator(tmp_path: Path) -> None:
    """The embedded chain served over JSON-RPC stands in for Geth: no free balances, so the
    operator's transfers fund the run's admin, aggregator and participants (who may commit
    themselves), every one of them an account generated for the run, not one the seed gives."""
    operator = identity("run operator")
    write_keystore(operator.account, tmp_path / "operator.json", PASSWORD)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    embedded = EmbeddedChain.create(funded=[operator.address])
    with RpcBridge(embedded.web3) as url:
        completed = flchain("run", "chain=rpc", f"chain.url={url}", f"chain.chain_id={embedded.web3.eth.chain_id}",
                            f"chain.keystore={tmp_path / 'operator.json'}", f"chain.password_file={tmp_path / 'password'}",
                            "chain.fund_ether=0.5", *EXPERIMENT, "rounds=1", f"hydra.run.dir={tmp_path / 'run'}")
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert f"[chain] Fund 5 accounts from operator {operator.address}" in completed.stderr
        assert embedded.web3.eth.get_transaction_count(operator.address) == 5
    federation = json.loads((tmp_path / "run" / "federation.json").read_text())
    assert federation["accounts"].startswith("generated for the run")
    derived = SimulatedConsortium.create(0, 3, 2, seed_accounts=True)
    assert federation["admin"] != derived.admin.address
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["accepted"] for r in summary["rounds"]] == [True]
