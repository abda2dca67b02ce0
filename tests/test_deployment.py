"""A multi-organization deployment: keys, node config, refusals, and the whole demo on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_tasks import write_image_folders

from aggregator.config import compose_experiment
from clients.node import resolve_node
from experiments.deployment_demo import Demo
from fl_chain import protocol
from fl_chain.chain import rpc
from fl_chain.chain.accounts import unlock_keystore
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.federation import Refusal, Role, experiment_of, parameters_for
from fl_chain.chain.federation_file import describe
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.keyfile import read_key_file
from fl_chain.orgkeys import MemberCard, OrgFiles, generate_org
from fl_chain.protocol import Federation
from fl_chain.settings import RunSettings
from fl_chain.storage.blockstore import LocalStore
from fl_chain.tasks.catalog import open_task, run_shape

from conftest import Consortium, flchain, genesis_cid

REPO_ROOT = Path(__file__).resolve().parent.parent


def processes_under(directory: Path) -> list[int]:
    """Live processes started for a deployment in `directory`: by FLWR_HOME or command line."""
    markers = (f"FLWR_HOME={directory}".encode(), str(directory).encode())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ, cmdline = (entry / "environ").read_bytes(), (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (markers[0] in environ.split(b"\0") or markers[1] in cmdline):
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_org_keys_hand_out_only_public_parts(tmp_path: Path) -> None:
    card = generate_org("St. Example", tmp_path / "org", "secret")
    files = OrgFiles(tmp_path / "org")
    document = json.loads(files.card.read_text())
    assert set(document) == {"format", "name", "address", "x25519", "node_auth_public_key"}
    assert MemberCard.read(files.card) == card
    assert card.node_auth_public_key.startswith("ecdsa-sha2-nistp384 ")
    for secret in (files.keystore, files.x25519_key, files.node_auth_private):
        assert secret.stat().st_mode & 0o077 == 0, secret
    with pytest.raises(UsageError, match="generated once"):
        generate_org("St. Example", tmp_path / "org", "secret")


def test_keys_command_needs_a_password(tmp_path: Path) -> None:
    environment_free = flchain("keys", "org", "h", "--out", str(tmp_path / "h"), "--password-env", "NO_SUCH_VAR_X")
    assert environment_free.returncode == 2
    assert "NO_SUCH_VAR_X is not set" in environment_free.stderr


def test_simulated_node_config_without_keys_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither partition-id .* nor keystore"):
        resolve_node("{}", {"something": "else"})


EXPERIMENT = experiment_of(compose_experiment(["task=csv", "task.files=[data.csv]", "task.target=target", "quorum=1",
                                               "num_validators=1", "attestation_threshold=1"]))


def site(tmp_path: Path, anvil_node: AnvilNode, consortium: Consortium, experiment: dict[str, object],
         admitted: bool, deployed: dict[str, object] = EXPERIMENT):  # type: ignore[no-untyped-def]
    """A federation deployed for `deployed`, one site's keys and node config, and the run
    settings of an aggregator asking for `experiment`."""
    chain = rpc.connect(anvil_node.url)
    rpc.fund(chain, [identity.address for identity in consortium.everyone])
    parameters = parameters_for(deployed)
    ledger = Ledger.deploy(chain, consortium.admin.account, parameters, genesis_cid())
    (tmp_path / "password").write_text("pw")
    card = generate_org("site", tmp_path / "keys", "pw")
    rpc.fund(chain, [card.address])
    members = [(consortium.aggregator.address, consortium.aggregator.x25519_public, Role.AGGREGATOR)]
    if admitted:
        members.append((card.address, bytes.fromhex(card.x25519), Role.PARTICIPANT))
    ledger.add_members(consortium.admin.account, members)
    ledger.set_aggregator(consortium.admin.account, consortium.aggregator.address)
    describe(ledger, genesis_cid(), None).write(tmp_path / "federation.json")
    (tmp_path / "data.csv").write_text("a,b,target\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    files = OrgFiles(tmp_path / "keys")
    node_config = {"keystore": str(files.keystore), "password-file": str(tmp_path / "password"),
                   "x25519-key": str(files.x25519_key), "federation-file": str(tmp_path / "federation.json"),
                   "chain-url": anvil_node.url, "data-file": str(tmp_path / "data.csv"),
                   "store-dir": str(tmp_path / "store")}
    settings = RunSettings(experiment=experiment, chain_url=anvil_node.url, contract=ledger.address, store={},
                           ship_blobs=True)
    return ledger, card, node_config, settings


@pytest.mark.anvil
def test_a_site_refuses_settings_the_federation_was_not_deployed_for(
        tmp_path: Path, anvil_node: AnvilNode, consortium: Consortium) -> None:
    """An aggregator asking for one full-batch step at learning rate 1000 is refused before any data is read."""
    greedy = {**EXPERIMENT, "task": {**EXPERIMENT["task"], "learning_rate": 1000.0, "batch_size": 10**6}}
    _, _, node_config, settings = site(tmp_path, anvil_node, consortium, greedy, admitted=True)
    with pytest.raises(UsageError, match="settings the federation .* was not deployed for .* refused before touching"):
        resolve_node(settings.to_json(), node_config)


@pytest.mark.anvil
def test_a_node_whose_account_is_not_a_member_says_so_and_cannot_commit(
        tmp_path: Path, anvil_node: AnvilNode, consortium: Consortium) -> None:
    """A SuperNode configured with an account the admin never admitted: it says so at once,
    and the contract refuses its commitment anyway."""
    ledger, card, node_config, settings = site(tmp_path, anvil_node, consortium, EXPERIMENT, admitted=False)
    with pytest.raises(UsageError, match=f"this site's account {card.address} is not an active participant"):
        resolve_node(settings.to_json(), node_config)
    aggregator_side = Federation(ledger, LocalStore(tmp_path / "aggregator-store"))
    ticket = protocol.open_round(aggregator_side, consortium.aggregator, 1)
    outsider = Identity(unlock_keystore(OrgFiles(tmp_path / "keys").keystore, password_file=tmp_path / "password"),
                        read_key_file(OrgFiles(tmp_path / "keys").x25519_key).private_key)
    signed = protocol.commit_update(aggregator_side, outsider, ticket, {"w": np.ones(3, np.float32)}, 10)
    outcome = protocol.relay(aggregator_side, consortium.aggregator, [signed])
    assert outcome is not None and outcome.accepted == ()
    [(refused, reason)] = outcome.refused
    assert refused == card.address and reason == Refusal.NOT_PARTICIPANT
    assert "is not a member with the participant role" in reason.explain(refused, 1)
    assert ledger.round(1).commitments == 0


@pytest.mark.anvil
def test_an_admitted_site_starts_without_unlocking_its_keystore(
        tmp_path: Path, anvil_node: AnvilNode, consortium: Consortium) -> None:
    _, card, node_config, settings = site(tmp_path, anvil_node, consortium, EXPERIMENT, admitted=True)
    node = resolve_node(settings.to_json(), node_config)
    assert node.address == card.address and "identity" not in vars(node)  # named without unlocking
    assert node.identity.address == card.address


IMAGES = experiment_of(compose_experiment(["task=images", "task.dirs=[]", "task.classes=[bottom,top]", "task.size=8",
                                           "num_participants=1", "quorum=1", "num_validators=1",
                                           "attestation_threshold=1"]))


@pytest.mark.anvil
def test_a_deployed_site_trains_on_its_own_image_folder_named_by_data_dir(
        tmp_path: Path, anvil_node: AnvilNode, consortium: Consortium) -> None:
    _, _, node_config, settings = site(tmp_path, anvil_node, consortium, IMAGES, admitted=True, deployed=IMAGES)
    with pytest.raises(UsageError, match="node config lacks data-dir: this site's data, a folder of images"):
        resolve_node(settings.to_json(), node_config)
    [folder] = write_image_folders(tmp_path / "images", sites=1)
    node = resolve_node(settings.to_json(), {**node_config, "data-dir": folder})
    assert node.summarize is None  # images are scaled by their fixed range: nothing to agree on
    data = node.load_data()
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2 and data.split.examples + len(data.split.test_y) == 16
    task = open_task(IMAGES)
    trained = task.train(task.initial_weights(run_shape(IMAGES)), data, seed=1)
    assert trained.examples == data.split.examples


@pytest.mark.anvil
@pytest.mark.slow
def test_an_unregistered_supernode_is_refused_by_the_superlink(tmp_path: Path) -> None:
    out = tmp_path / "deployment"
    generate_org("stranger", tmp_path / "stranger", "pw")
    with Demo(out, participants=1, validators=1, overrides=[]) as demo:
        port = demo.start_superlink()
        node = demo.start("stranger", [
            str(Path(sys.executable).parent / "flower-supernode"), "--superlink", f"127.0.0.1:{port}",
            "--root-certificates", str(out / "superlink" / "tls" / "ca.crt"),
            "--auth-supernode-private-key", str(OrgFiles(tmp_path / "stranger").node_auth_private),
            "--port", str(free_port()), "--max-retries", "1", "--node-config", 'org="stranger"',
        ])
        code = node.wait(timeout=120)
    assert code != 0
    superlink_log = (out / "logs" / "superlink.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log
    assert processes_under(out) == []


def _demo(out: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "fl_chain.cli", "deployment-demo", "--participants", "3",
                             "--rounds", "2", "--out", str(out)], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)


@pytest.mark.anvil
@pytest.mark.slow
def test_deployment_demo_trains_and_verifies_then_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = _demo(out)
    try:
        output, _ = demo.communicate(timeout=600)
    finally:
        demo.kill()
    assert demo.returncode == 0, output[-4000:]
    assert "verdict: PASSED" in output
    assert processes_under(out) == []
    [run_dir] = (out / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["accepted"] for r in summary["rounds"]] == [True, True]
    assert all(r["included"] == 3 for r in summary["rounds"])
    assert (run_dir / "chain" / "history.jsonl").is_file()  # the signed transactions verify re-executes
    again = flchain("verify", str(run_dir))  # after the demo, from its files alone
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]


@pytest.mark.anvil
@pytest.mark.slow
def test_deployment_demo_stops_everything_when_terminated(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = _demo(out)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "SuperNode of org-2 started" in line:
                break
        else:
            pytest.fail("the demo ended before its SuperNodes started")
        time.sleep(2)
        assert processes_under(out), "the demo's processes should be running"
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 130
    assert processes_under(out) == []
