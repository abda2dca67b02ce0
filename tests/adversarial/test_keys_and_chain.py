"""Nothing public derives a secret, and a chain's record proves only what was signed.

A stranger who knows the seed of a run on a shared node must not be able to act as its
parties; a member card with a key nobody can seal for must not stop the federation; and a
history with transactions nobody signed (a development node's impersonation) must not
verify.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fl_chain import protocol
from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.federation import FederationParameters, Member, Role
from fl_chain.chain.history import HISTORY_FILE, export_history
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.protocol import Federation
from fl_chain.storage.blockstore import LocalStore

from conftest import flchain

WEAK_KEY = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"


@pytest.mark.anvil
def test_seed_derived_accounts_cannot_act_on_a_chain_the_run_did_not_start(anvil_node: AnvilNode) -> None:
    chain = rpc.connect(anvil_node.url)  # a node someone else runs, as far as the run knows
    consortium = SimulatedConsortium.create(0, 3, 2, seed_accounts=True)
    parameters = FederationParameters(b"\x00" * 32, 0, 2, 600, 2)
    with pytest.raises(UsageError, match="derived from the seed may only act on a chain the run starts itself"):
        consortium.found(chain, parameters, protocol.publish_genesis_model(LocalStore(Path("/tmp/unused")), {
            "w": np.zeros(2, np.float32)}))
    fresh = SimulatedConsortium.create(0, 3, 2, seed_accounts=False)
    derived = SimulatedConsortium.create(0, 3, 2, seed_accounts=True)
    assert fresh.admin.address != derived.admin.address


def test_a_small_order_key_on_a_member_card_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"address": "0x" + "11" * 20, "x25519": WEAK_KEY}))
    completed = flchain("members", "add", "--federation", str(tmp_path / "federation.json"), "--url",
                        "http://127.0.0.1:9", "--keystore", str(tmp_path / "admin.json"), "--card", str(card),
                        "--roles", "validator")
    assert completed.returncode == 2
    assert "is a point of small order on Curve25519" in completed.stderr and "Traceback" not in completed.stderr


def test_one_unusable_recipient_key_never_stops_anyone_from_sealing() -> None:
    class Listing:  # the chain's view of members, with one key admitted before the contract refused such keys
        def aggregator(self, block: int | None = None) -> str:
            return "0x" + "aa" * 20

        def members(self, block: int | None = None) -> list[Member]:
            good = bytes.fromhex("9" * 64)
            return [Member("0x" + "aa" * 20, 0, Role.AGGREGATOR, True, good),
                    Member("0x" + "bb" * 20, 1, Role.VALIDATOR, True, bytes.fromhex(WEAK_KEY)),
                    Member("0x" + "cc" * 20, 2, Role.VALIDATOR, True, bytes(32))]

    recipients = protocol.update_recipients(Federation(Listing(), None))  # type: ignore[arg-type]
    assert recipients == [bytes.fromhex("9" * 64)]


@pytest.mark.anvil
def test_a_history_with_an_impersonated_attestation_does_not_verify(anvil_binary: Path, tmp_path: Path) -> None:
    """On anvil anyone can send transactions as any account; the run directory keeps the
    signed history, and re-executing it leaves out what nobody signed."""
    from adversarial.cast import genesis_model
    from fl_chain.chain.federation_file import describe

    with AnvilNode() as node:
        chain = rpc.connect(node.url, development=True)
        consortium = SimulatedConsortium.create(3, 4, 3, seed_accounts=True)
        rpc.fund(chain, consortium.transacting_addresses)
        store = LocalStore(tmp_path / "run" / "store")
        genesis = protocol.publish_genesis_model(store, genesis_model())
        ledger = consortium.found(chain, FederationParameters(b"\x02" * 32, 0, 3, 600, 2), genesis)
        federation = Federation(ledger, store)
        ticket = protocol.open_round(federation, consortium.aggregator, 1)
        base = protocol.fetch_global_model(federation, ticket)
        receipts = [protocol.commit_update(federation, p, ticket, {k: v + 0.1 * i for k, v in base.items()}, 5)
                    for i, p in enumerate(consortium.participants)]
        protocol.relay(federation, consortium.aggregator, receipts)
        collected = protocol.collect(federation, consortium.aggregator.x25519_private, 1,
                                     protocol.UpdateRules.for_round(federation, 1))
        _, model = protocol.aggregate(federation, 1, collected, base)
        protocol.finalize(federation, consortium.aggregator, 1, model, collected)
        honest, forged = consortium.validators[0], consortium.validators[1]
        protocol.attest(federation, honest, 1, protocol.judge(federation, honest, 1).model)
        web3 = chain.web3
        web3.provider.make_request("anvil_impersonateAccount", [forged.address])
        data = ledger.contract.functions.attest(1, model.digest, model.codec).build_transaction(
            {"from": forged.address, "gas": 300_000})["data"]
        sent = web3.provider.make_request("eth_sendTransaction", [{"from": forged.address, "to": ledger.address,
                                                                   "data": data, "gas": hex(300_000)}])
        assert "result" in sent, sent
        web3.eth.wait_for_transaction_receipt(sent["result"])  # anvil mines it a moment after answering
        assert ledger.round(1).status.name == "ACCEPTED"  # on the node, the forgery counted
        run = tmp_path / "run"
        describe(ledger, genesis, None).write(run / "federation.json")
        export_history(web3, run / HISTORY_FILE)
    completed = flchain("verify", str(run), "--json")
    report = json.loads(completed.stdout)
    assert completed.returncode == 1
    failed = {f["check"]: f["detail"] for f in report["findings"] if f["status"] == "failed"}
    assert "carries no valid signature (an impersonated or forged sender)" in failed["every transaction signed by its sender"]
    [round_one] = report["rounds"]
    assert not round_one["accepted"]  # re-executed, the impersonated attestation never happened
    assert [a["validator"] for a in round_one["attestations"]] == [honest.address]
