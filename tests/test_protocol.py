"""Rounds of the protocol end to end: every role, real chain, real store, driven by the round
coordinator (the one a Flower run drives) over the in-process transport."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_chain import protocol
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import ExclusionReason, FederationParameters, RoundStatus
from fl_chain.consortium import SimulatedConsortium
from fl_chain.identity import Identity
from fl_chain.inprocess import InProcessTransport
from fl_chain.messages import Ticket
from fl_chain.participant import ParticipantRole
from fl_chain.progress import Progress
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.round import RoundCoordinator, RoundPlan
from fl_chain.runlog import RunLog
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid
from fl_chain.task import Evaluated, Trained

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


class Corrupting:
    """An honest participant whose stored update loses a bit after it commits."""

    def __init__(self, role: ParticipantRole) -> None:
        self.role = role

    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        records = self.role.train(payload)
        path = self.role.federation.store.block_path(Cid.parse(records["receipt"]["cid"]))  # type: ignore[attr-defined]
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        return records

    def attest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.role.attest(payload)

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.role.evaluate(payload)


def roles(federation: Federation, consortium: SimulatedConsortium) -> dict[str, ParticipantRole]:
    """Participant i trains to the base plus 0.1·(i+1) with 10·(i+1) examples."""
    def role(index: int, identity: Identity) -> ParticipantRole:
        def train(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
            return Trained({name: value + np.float32(0.1 * (index + 1)) for name, value in base.items()}, 10 * (index + 1))

        return ParticipantRole(federation, lambda: identity, train, lambda weights: Evaluated({"loss": 0.0}, 10))

    return {identity.address: role(index, identity) for index, identity in enumerate(consortium.participants)}


def coordinator(federation: Federation, consortium: SimulatedConsortium, directory: Path, rounds: int,
                corrupt: int | None = None) -> RoundCoordinator:
    """The round coordinator a Flower run drives, here over the in-process transport."""
    responders: dict[str, Any] = dict(roles(federation, consortium))
    if corrupt is not None:
        address = consortium.participants[corrupt].address
        responders[address] = Corrupting(responders[address])
    directory.mkdir(parents=True, exist_ok=True)
    plan = RoundPlan(rounds, federation.ledger.parameters().quorum, 1.0, 60, seed=0, fast_forward=True)
    return RoundCoordinator(federation, consortium.aggregator, plan, InProcessTransport(responders),
                            RunLog(directory, metrics=("loss",)), Progress(rounds, io.StringIO()))


def test_rounds_are_accepted_and_reproducible(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path / "a")
    driver = coordinator(federation, consortium, tmp_path / "a" / "run", rounds=2)
    driver.run()
    cids = [Cid.parse(summary.global_cid) for summary in driver.runlog.rounds]
    assert [summary.exclusions for summary in driver.runlog.rounds] == [[], []]
    assert [federation.ledger.round(number).status for number in (1, 2)] == [RoundStatus.ACCEPTED] * 2
    assert federation.ledger.latest_accepted() == (2, cids[1])
    # examples 10, 20, 30, 40 and offsets 0.1 .. 0.4 on top of the base: weighted mean 0.3
    first = protocol.load_model(federation.store, cids[0])
    np.testing.assert_allclose(first["layer.bias"], model(0)["layer.bias"] + 0.3, rtol=1e-6)

    # fresh X25519 keys (so other update blobs) but the same seed: the same global models
    again, again_consortium = found(tmp_path / "b")
    assert again_consortium.aggregator.x25519_public != consortium.aggregator.x25519_public
    rerun = coordinator(again, again_consortium, tmp_path / "b" / "run", rounds=2)
    rerun.run()
    assert [Cid.parse(summary.global_cid) for summary in rerun.runlog.rounds] == cids


def test_a_tampered_update_is_excluded_with_its_reason(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path)
    driver = coordinator(federation, consortium, tmp_path / "run", rounds=1, corrupt=2)
    driver.run()
    [exclusion] = driver.runlog.rounds[0].exclusions
    assert exclusion["participant"] == consortium.participants[2].address
    assert "is corrupted: its stored bytes hash to" in exclusion["reason"]
    assert federation.ledger.round(1).included == 3
    assert federation.ledger.round(1).status == RoundStatus.ACCEPTED
    assert federation.ledger.exclusions(1) == [(consortium.participants[2].address, ExclusionReason.UNAVAILABLE)]


def test_participant_rejects_an_announcement_the_chain_contradicts(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path)
    ticket = protocol.open_round(federation, consortium.aggregator, 1)
    forged = Ticket(1, ticket.attempt, protocol.publish_genesis_model(federation.store, model(9)), ticket.deadline)
    with pytest.raises(ProtocolError, match="but the chain says it starts from"):
        protocol.fetch_global_model(federation, forged)
