"""One round of the protocol end to end, without any transport: every role, real chain, real store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fl_chain import protocol
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import ExclusionReason, FederationParameters, RoundStatus
from fl_chain.consortium import SimulatedConsortium
from fl_chain.messages import Ticket
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.storage.blockstore import LocalStore

QUICK = protocol.FetchRetries(attempts=2, first_delay=0.01, max_delay=0.01)


def model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"layer.weight": rng.normal(size=(4, 3)).astype(np.float32), "layer.bias": rng.normal(size=4).astype(np.float32)}


def found(directory: Path, seed: int = 7) -> tuple[Federation, SimulatedConsortium]:
    consortium = SimulatedConsortium.create(seed, num_participants=4, num_validators=2, seed_accounts=True)
    embedded = EmbeddedChain.create(directory / "ledger", funded=consortium.transacting_addresses)
    store = LocalStore(directory / "store")
    genesis = protocol.publish_genesis_model(store, model(0))
    parameters = FederationParameters(hashlib.sha256(b"protocol test").digest(), 0, 3, 600, 2)
    ledger = consortium.found(embedded.connect(), parameters, genesis)
    return Federation(ledger, store), consortium


def train_round(federation: Federation, consortium: SimulatedConsortium, round_number: int, corrupt: int | None = None):  # type: ignore[no-untyped-def]
    ticket = protocol.open_round(federation, consortium.aggregator, round_number)
    receipts = []
    for i, participant in enumerate(consortium.participants):
        base = protocol.fetch_global_model(federation, ticket)
        trained = {name: value + np.float32(0.1 * (i + 1)) for name, value in base.items()}
        receipts.append(protocol.commit_update(federation, participant, ticket, trained, examples=10 * (i + 1)))
        if i == corrupt:
            path = federation.store.block_path(receipts[-1].commitment.cid)
            data = bytearray(path.read_bytes())
            data[-1] ^= 1
            path.write_bytes(bytes(data))
    protocol.relay(federation, consortium.aggregator, reversed(receipts))
    rules = protocol.UpdateRules.for_round(federation, ticket.round)
    collected = protocol.collect(federation, consortium.aggregator.x25519_private, round_number, rules, retries=QUICK)
    tensors, cid = protocol.aggregate(federation, round_number, collected)
    protocol.finalize(federation, consortium.aggregator, round_number, cid, collected)
    for validator in consortium.validators:
        judgement = protocol.judge(federation, validator, round_number, QUICK)
        protocol.attest(federation, validator, round_number, judgement.model)
    return collected, tensors, cid


def test_rounds_are_accepted_and_reproducible(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path / "a")
    cids = []
    for round_number in (1, 2):
        collected, tensors, cid = train_round(federation, consortium, round_number)
        assert collected.exclusions == ()
        assert federation.ledger.round(round_number).status == RoundStatus.ACCEPTED
        assert federation.ledger.latest_accepted() == (round_number, cid)
        assert protocol.load_model(federation.store, cid).keys() == tensors.keys()
        cids.append(cid)
    # examples 10, 20, 30, 40 and offsets 0.1 .. 0.4 on top of the base: weighted mean 0.3
    first = protocol.load_model(federation.store, cids[0])
    np.testing.assert_allclose(first["layer.bias"], model(0)["layer.bias"] + 0.3, rtol=1e-6)

    # fresh X25519 keys (so other update blobs) but the same seed: the same global models
    again, again_consortium = found(tmp_path / "b")
    assert again_consortium.aggregator.x25519_public != consortium.aggregator.x25519_public
    assert [train_round(again, again_consortium, r)[2] for r in (1, 2)] == cids


def test_a_tampered_update_is_excluded_with_its_reason(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path)
    collected, _, _ = train_round(federation, consortium, 1, corrupt=2)
    assert [e.participant for e in collected.exclusions] == [consortium.participants[2].address]
    assert "is corrupted: its stored bytes hash to" in collected.exclusions[0].reason
    assert len(collected.included) == 3
    assert federation.ledger.round(1).status == RoundStatus.ACCEPTED
    assert federation.ledger.exclusions(1) == [(consortium.participants[2].address, ExclusionReason.UNAVAILABLE)]


def test_participant_rejects_an_announcement_the_chain_contradicts(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path)
    ticket = protocol.open_round(federation, consortium.aggregator, 1)
    forged = Ticket(1, ticket.attempt, protocol.publish_genesis_model(federation.store, model(9)), ticket.deadline)
    with pytest.raises(ProtocolError, match="but the chain says it starts from"):
        protocol.fetch_global_model(federation, forged)
