"""Faulty participants and a censoring aggregator, on a real chain and store, each round
driven by the round coordinator over the in-process transport (as a Flower run drives it).

Each fault is one round in which one of five participants misbehaves: the round still
finalizes with the others, the chain records why that update was left out (an Excluded
event; a receipt whose signature is not its sender's is never relayed), validators accept
the round, and `fl_chain.verify` confirms the recorded reason; an aggregator that excludes
a valid update is caught by the validators, who dissent, and by the verifier holding an
opening key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_chain import protocol
from fl_chain.chain.chain import Chain
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import ExclusionReason, FederationParameters, Role, RoundStatus
from fl_chain.chain.history import Event
from fl_chain.chain.ledger import Ledger
from fl_chain.codec import encode_model, schema_hash
from fl_chain.envelope import UpdateHeader, seal_encoded
from fl_chain.errors import BlobNotFound, UsageError
from fl_chain.identity import Identity
from fl_chain.inprocess import InProcessTransport
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Receipt, Ticket
from fl_chain.participant import ParticipantRole
from fl_chain.progress import Progress
from fl_chain.protocol import CollectedUpdates, Exclusion, Federation, ProtocolError
from fl_chain.round import RoundCoordinator, RoundPlan
from fl_chain.runlog import RunLog
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid
from fl_chain.storage.dag import MAX_BLOB_BYTES
from fl_chain.task import Evaluated, Trained
from fl_chain.timing import Stopwatch
from fl_chain.verify import audit as audit_module
from fl_chain.verify.audit import Audit, audit
from fl_chain.verify.findings import Finding, Status
from fl_chain.verify.render import text_report

from conftest import Consortium

FAULTY = 2
OUTSIDER = Identity.derive(b"fl-chain tests", "outsider").address  # conftest's outsider: never a member
Tensors = dict[str, np.ndarray]
Commit = Callable[[Federation, Identity, Ticket, Tensors, int], SignedCommitment]


# ---------------------------------------------------------------- a federation and a round


class FlakyStore(LocalStore):
    """A local store that fails to serve chosen blobs a given number of times, then serves them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures: dict[Cid, int] = {}
        self.fetches: dict[Cid, int] = {}

    def get(self, cid: Cid, max_size: int = MAX_BLOB_BYTES) -> bytes:
        self.fetches[cid] = self.fetches.get(cid, 0) + 1
        if self.failures.get(cid, 0) > 0:
            self.failures[cid] -= 1
            raise BlobNotFound(f"{cid} is not in the store yet")
        return super().get(cid, max_size)


def base_model() -> Tensors:
    rng = np.random.default_rng(0)
    return {"layer.bias": rng.normal(size=4).astype(np.float32),
            "layer.weight": rng.normal(size=(4, 3)).astype(np.float32)}


def found(chain: Chain, consortium: Consortium, store: LocalStore) -> Federation:
    """The test consortium (funded on every backend) around a stored genesis model."""
    genesis = protocol.publish_genesis_model(store, base_model())
    parameters = FederationParameters(hashlib.sha256(b"fault test").digest(), 0, 3, 600, 2)
    ledger = Ledger.deploy(chain, consortium.admin.account, parameters, genesis)
    members = [(consortium.aggregator.address, consortium.aggregator.x25519_public, Role.AGGREGATOR)]
    members += [(v.address, v.x25519_public, Role.VALIDATOR) for v in consortium.validators]
    members += [(p.address, p.x25519_public, Role.PARTICIPANT) for p in consortium.participants]
    ledger.add_members(consortium.admin.account, members)
    ledger.set_aggregator(consortium.admin.account, consortium.aggregator.address)
    return Federation(ledger, store)


def embedded(tmp_path: Path, consortium: Consortium, store: LocalStore | None = None) -> Federation:
    chain = EmbeddedChain.create(tmp_path / "ledger", funded=[i.address for i in consortium.everyone])
    return found(Chain(chain.web3, backend="embedded"), consortium, store or LocalStore(tmp_path / "store"))


def honest(federation: Federation, participant: Identity, ticket: Ticket, tensors: Tensors,
           examples: int) -> SignedCommitment:
    return protocol.commit_update(federation, participant, ticket, tensors, examples)


Verdicts = Callable[[CollectedUpdates], CollectedUpdates]


class Participant:
    """Trains like every participant here (the base plus 0.1·(i+1), 10·(i+1) examples) and
    commits with `commit`, honest or faulty; evaluates and attests as the honest role does."""

    def __init__(self, federation: Federation, identity: Identity, index: int, commit: Commit) -> None:
        self.federation, self.identity, self.index, self.commit = federation, identity, index, commit
        self.role = ParticipantRole(federation, lambda: identity, self._unused, lambda _: Evaluated({"loss": 0.0}, 10))

    @staticmethod
    def _unused(base: Tensors, ticket: Ticket) -> Trained:
        raise AssertionError("training goes through `train`, with its commit")

    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        ticket = Ticket.from_record(payload)
        base = protocol.fetch_global_model(self.federation, ticket)
        trained = {name: value + np.float32(0.1 * (self.index + 1)) for name, value in base.items()}
        return {"receipt": Receipt(self.commit(self.federation, self.identity, ticket, trained,
                                               10 * (self.index + 1))).to_record()}

    def attest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.role.attest(payload)

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.role.evaluate(payload)


class Overruling(RoundCoordinator):
    """The coordinator of an aggregator that has the last word on who is in (`verdicts`)."""

    def __init__(self, *args: Any, verdicts: Verdicts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verdicts = verdicts

    def collect(self, round_number: int, rules: protocol.UpdateRules, stopwatch: Stopwatch) -> CollectedUpdates:
        return self.verdicts(super().collect(round_number, rules, stopwatch))


def run_round(federation: Federation, consortium: Consortium, faults: dict[int, Commit],
              verdicts: Verdicts = lambda collected: collected) -> list[dict[str, str]]:
    """One round driven by the round coordinator over the in-process transport: participants
    commit (some faultily), the aggregator relays, collects, lets `verdicts` have the last
    word on who is in, aggregates and finalizes; the validators judge it and attest what
    they find. One attempt: a round that is not accepted stays as its attempt left it.
    Returns the round's exclusions with their reasons (as summary.json records them)."""
    responders: dict[str, Any] = {
        p.address: Participant(federation, p, i, faults.get(i, honest)) for i, p in enumerate(consortium.participants)}
    responders |= {v.address: ParticipantRole(federation, lambda v=v: v, Participant._unused, lambda _: None)
                   for v in consortium.validators}
    run_dir = federation.store.root.parent / "run"  # type: ignore[attr-defined]
    run_dir.mkdir(exist_ok=True)
    plan = RoundPlan(1, federation.ledger.parameters().quorum, 1.0, 60, seed=0, max_attempts=1, fast_forward=True)
    coordinator = Overruling(federation, consortium.aggregator, plan, InProcessTransport(responders), RunLog(run_dir),
                             Progress(1, io.StringIO()), verdicts=verdicts)
    try:
        coordinator.run_round(1)
    except ProtocolError:
        return []  # not accepted: the tests read what the chain recorded
    return coordinator.runlog.rounds[-1].exclusions


def opening_key(identity: Identity) -> OpeningKey:
    return OpeningKey(identity.address, "validator", identity.x25519_private)


def exclusion_finding(result: Audit, participant: str) -> Finding:
    [finding] = [f for f in result.findings.items if f.check == "exclusion justified" and f.participant == participant]
    return finding


# ---------------------------------------------------------------- misbehaving participants


def flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def sign_blob(federation: Federation, participant: Identity, ticket: Ticket, blob: bytes,
              examples: int) -> SignedCommitment:
    cid = federation.store.put(blob)
    return federation.ledger.sign(participant.account, ticket.round, ticket.attempt, cid, examples)


def sealed(federation: Federation, participant: Identity, ticket: Ticket, tensors: Tensors, examples: int,
           **header: object) -> bytes:
    """An envelope sealed for the right recipients, with header fields of the sender's choosing."""
    honest_header = UpdateHeader(federation.address, federation.chain_id, ticket.round, participant.address,
                                 schema_hash(tensors), examples)
    return seal_encoded(encode_model(tensors, {}), dataclasses.replace(honest_header, **header),
                        protocol.update_recipients(federation, ticket.round))


def flipped_in_store(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    signed = honest(federation, participant, ticket, tensors, examples)
    path = federation.store.block_path(signed.commitment.cid)  # type: ignore[attr-defined]
    path.write_bytes(flip(path.read_bytes(), -1))
    return signed


def deleted_from_store(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    signed = honest(federation, participant, ticket, tensors, examples)
    federation.store.block_path(signed.commitment.cid).unlink()  # type: ignore[attr-defined]
    return signed


def tampered_before_commit(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    blob = sealed(federation, participant, ticket, tensors, examples)
    return sign_blob(federation, participant, ticket, flip(blob, len(blob) - 20), examples)


def truncated(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    blob = sealed(federation, participant, ticket, tensors, examples)
    return sign_blob(federation, participant, ticket, blob[: len(blob) // 2], examples)


def transposed(tensors: Tensors) -> Tensors:
    return {**tensors, "layer.weight": np.ascontiguousarray(tensors["layer.weight"].T)}


def wrong_shape(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    return honest(federation, participant, ticket, transposed(tensors), examples)


def wrong_shape_under_the_expected_schema(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    blob = sealed(federation, participant, ticket, transposed(tensors), examples, schema_hash=schema_hash(tensors))
    return sign_blob(federation, participant, ticket, blob, examples)


def not_a_number(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    poisoned = {name: value.copy() for name, value in tensors.items()}
    poisoned["layer.bias"][1] = np.nan
    return honest(federation, participant, ticket, poisoned, examples)


def header_for_another_round(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    blob = sealed(federation, participant, ticket, tensors, examples, round=ticket.round + 1)
    return sign_blob(federation, participant, ticket, blob, examples)


def header_for_another_sender(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    impersonated = next(p for p in federation.ledger.members() if p.address != participant.address
                        and Role.PARTICIPANT in p.roles)
    blob = sealed(federation, participant, ticket, tensors, examples, sender=impersonated.address)
    return sign_blob(federation, participant, ticket, blob, examples)


def header_with_other_examples(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    blob = sealed(federation, participant, ticket, tensors, examples * 10)
    return sign_blob(federation, participant, ticket, blob, examples)


def signed_for_another_round(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
    signed = honest(federation, participant, ticket, tensors, examples)
    other = federation.ledger.sign(participant.account, ticket.round + 1, ticket.attempt, signed.commitment.cid, examples)
    return dataclasses.replace(other, commitment=signed.commitment)


# (fault, reason on chain, what the exclusion says, verdict of a verifier without a key)
FAULTS = [
    pytest.param(flipped_in_store, ExclusionReason.UNAVAILABLE, "is corrupted: its stored bytes hash to",
                 Status.UNCHECKED, id="bytes flipped in the store"),
    pytest.param(deleted_from_store, ExclusionReason.UNAVAILABLE, "is not in the store (gave up after 4 attempts",
                 Status.UNCHECKED, id="blob deleted"),
    pytest.param(tampered_before_commit, ExclusionReason.UNDECRYPTABLE, "does not authenticate",
                 Status.UNCHECKED, id="tampered ciphertext"),
    pytest.param(truncated, ExclusionReason.UNDECRYPTABLE, "envelope truncated", Status.UNCHECKED, id="truncated"),
    pytest.param(wrong_shape, ExclusionReason.WRONG_SHAPE, "the global model has schema", Status.UNCHECKED,
                 id="wrong shape"),
    pytest.param(wrong_shape_under_the_expected_schema, ExclusionReason.WRONG_SHAPE, "but its tensors have schema",
                 Status.UNCHECKED, id="wrong shape, expected schema declared"),
    pytest.param(not_a_number, ExclusionReason.NON_FINITE, "holds 1 NaN and 0 infinite values", Status.UNCHECKED,
                 id="NaN"),
    pytest.param(header_for_another_round, ExclusionReason.WRONG_HEADER, "is for round 2, expected 1", Status.PASSED,
                 id="header for another round"),
    pytest.param(header_for_another_sender, ExclusionReason.WRONG_HEADER, "committed it", Status.PASSED,
                 id="header for another sender"),
    pytest.param(header_with_other_examples, ExclusionReason.WRONG_HEADER, "its commitment 30", Status.PASSED,
                 id="header with other examples"),
]


# ---------------------------------------------------------------- faults, each in one round (embedded chain)


@pytest.mark.parametrize(("fault", "reason", "says", "without_key"), FAULTS)
def test_a_faulty_update_is_excluded_with_its_reason_and_the_round_goes_on(
    tmp_path: Path, consortium: Consortium, fault: Commit, reason: ExclusionReason, says: str, without_key: Status
) -> None:
    federation = embedded(tmp_path, consortium)
    faulty = consortium.participants[FAULTY].address
    [exclusion] = run_round(federation, consortium, {FAULTY: fault})

    assert exclusion["participant"] == faulty
    assert exclusion["reason"].startswith(reason.explain(faulty, 1)) and says in exclusion["reason"]
    assert federation.ledger.exclusions(1) == [(faulty, reason)]
    state = federation.ledger.round(1)
    assert (state.status, state.included, state.commitments) == (RoundStatus.ACCEPTED, 4, 5)

    verified = audit(federation, [opening_key(consortium.validators[0])])
    assert verified.findings.ok, [f.describe() for f in verified.findings.failures]
    # what was available when is not judged after the fact: unavailability stays unchecked, with a key too
    judged = Status.UNCHECKED if reason == ExclusionReason.UNAVAILABLE else Status.PASSED
    assert exclusion_finding(verified, faulty).status == judged
    assert f"excluded: {reason.label} {'·' if judged == Status.UNCHECKED else '✓'}" in text_report(verified)
    public = audit(federation, [])
    assert public.findings.ok, [f.describe() for f in public.findings.failures]
    assert exclusion_finding(public, faulty).status == without_key


def test_a_blob_that_appears_after_two_failed_fetches_is_included(tmp_path: Path, consortium: Consortium) -> None:
    store = FlakyStore(tmp_path / "store")

    def late(federation, participant, ticket, tensors, examples):  # type: ignore[no-untyped-def]
        signed = honest(federation, participant, ticket, tensors, examples)
        store.failures[signed.commitment.cid] = 2
        return signed

    federation = embedded(tmp_path, consortium, store)
    assert run_round(federation, consortium, {FAULTY: late}) == []
    assert federation.ledger.round(1).included == 5
    late_cid = federation.ledger.commitments(1)[FAULTY].cid
    assert store.failures[late_cid] == 0
    assert store.fetches[late_cid] >= 3  # two failures, then the aggregator's successful fetch
    assert federation.ledger.round(1).status == RoundStatus.ACCEPTED


def test_fetch_retries_back_off_up_to_a_bound() -> None:
    assert protocol.FetchRetries().delays() == [0.25, 0.5, 1.0]
    assert protocol.FetchRetries(attempts=6, first_delay=0.5, max_delay=2.0).delays() == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert protocol.NO_RETRIES.delays() == []
    with pytest.raises(UsageError, match="attempts >= 1"):
        protocol.FetchRetries(attempts=0)


# ---------------------------------------------------------------- on every chain backend


def test_a_replayed_signature_is_refused_and_a_nan_update_is_excluded_on_chain(
    chain: Chain, consortium: Consortium, tmp_path: Path
) -> None:
    federation = found(chain, consortium, LocalStore(tmp_path / "store"))
    replayer, poisoner = consortium.participants[1].address, consortium.participants[3].address
    exclusions = run_round(federation, consortium, {1: signed_for_another_round, 3: not_a_number})

    # the aggregator checks each receipt's signature before relaying it (the contract would
    # refuse it too: tests/test_federation_contract.py)
    said = {exclusion["participant"]: exclusion["reason"] for exclusion in exclusions}
    assert set(said) == {replayer, poisoner}
    assert f"carries a signature that is not {replayer}'s" in said[replayer]
    assert replayer not in [record.participant for record in federation.ledger.commitments(1)]
    assert said[poisoner].startswith(ExclusionReason.NON_FINITE.explain(poisoner, 1))
    assert federation.ledger.exclusions(1) == [(poisoner, ExclusionReason.NON_FINITE)]
    state = federation.ledger.round(1)
    assert (state.status, state.commitments, state.included) == (RoundStatus.ACCEPTED, 4, 3)

    verified = audit(federation, [opening_key(consortium.validators[1])])
    assert verified.findings.ok, [f.describe() for f in verified.findings.failures]
    assert exclusion_finding(verified, poisoner).status == Status.PASSED
    assert [f.status for f in verified.findings.items if f.check == "commitments accounted for"] == [Status.PASSED]


# ---------------------------------------------------------------- a censoring aggregator


def overruled(address: str, reason: ExclusionReason) -> Verdicts:
    """An aggregator that leaves `address` out whatever its update is, claiming `reason`."""
    def verdicts(collected: CollectedUpdates) -> CollectedUpdates:
        updates = tuple(update for update in collected.updates if update.sender != address)
        exclusions = tuple(e for e in collected.exclusions if e.participant != address)
        return CollectedUpdates(updates, (*exclusions, Exclusion(address, "the aggregator says so", reason)),
                                collected.seen)
    return verdicts


@pytest.mark.parametrize(("fault", "claimed", "status", "says", "outcome"), [
    pytest.param(honest, ExclusionReason.UNDECRYPTABLE, Status.FAILED,
                 "the aggregator excluded a valid update of {p} as undecryptable", RoundStatus.FAILED,
                 id="valid update as undecryptable"),
    pytest.param(honest, ExclusionReason.NON_FINITE, Status.FAILED,
                 "the aggregator excluded a valid update of {p} as non-finite", RoundStatus.FAILED,
                 id="valid update as non-finite"),
    pytest.param(not_a_number, ExclusionReason.WRONG_SHAPE, Status.FAILED,
                 "the aggregator recorded wrong shape, but the update fails otherwise", RoundStatus.ACCEPTED,
                 id="NaN update as wrong shape"),
    pytest.param(honest, ExclusionReason.UNAVAILABLE, Status.UNCHECKED,
                 "it may have arrived after the aggregator gave up fetching it", RoundStatus.ACCEPTED,
                 id="valid update as unavailable"),
])
def test_an_exclusion_the_update_does_not_deserve_is_caught(
    tmp_path: Path, consortium: Consortium, fault: Commit, claimed: ExclusionReason, status: Status, says: str,
    outcome: RoundStatus,
) -> None:
    federation = embedded(tmp_path, consortium)
    victim = consortium.participants[FAULTY].address
    run_round(federation, consortium, {FAULTY: fault}, overruled(victim, claimed))
    assert federation.ledger.exclusions(1) == [(victim, claimed)]
    state = federation.ledger.round(1)
    # a valid update excluded for anything but unavailability: the three validators dissent, and the
    # attempt they would not accept is failed on chain
    assert state.status == outcome
    assert state.dissents == (3 if outcome == RoundStatus.FAILED else 0)

    verified = audit(federation, [opening_key(consortium.aggregator), opening_key(consortium.validators[0])])
    finding = exclusion_finding(verified, victim)
    assert finding.status == status
    assert says.format(p=victim) in finding.detail
    assert verified.findings.ok == (status != Status.FAILED)
    if status == Status.FAILED:
        assert finding.expected == claimed.label
        assert f"excluded: {claimed.label} ✗" in text_report(verified)


# ---------------------------------------------------------------- an event log that does not add up


@pytest.mark.parametrize(("edit", "says"), [
    pytest.param(lambda events, excluded: [e for e in events if e is not excluded],
                 "committed but neither included nor excluded: {p}", id="exclusion dropped"),
    pytest.param(lambda events, excluded: [e for e in events for _ in range(2 if e is excluded else 1)],
                 "{p} excluded twice", id="exclusion repeated"),
    pytest.param(lambda events, excluded: [dataclasses.replace(e, args={**e.args, "participant": OUTSIDER})
                                           if e is excluded else e for e in events],
                 "{o} excluded without a commitment; committed but neither included nor excluded: {p}",
                 id="exclusion of a non-committer"),
])
def test_a_log_whose_exclusions_do_not_account_for_the_commitments_fails(
    tmp_path: Path, consortium: Consortium, monkeypatch: pytest.MonkeyPatch,
    edit: Callable[[list[Event], Event], list[Event]], says: str,
) -> None:
    federation = embedded(tmp_path, consortium)
    run_round(federation, consortium, {FAULTY: not_a_number})
    history = audit_module.read_history(federation.ledger)
    [excluded] = [event for event in history if event.name == "Excluded"]
    monkeypatch.setattr(audit_module, "read_history", lambda ledger: edit(history, excluded))

    verified = audit(federation, [])
    [failure] = verified.findings.failures
    assert (failure.check, failure.round) == ("commitments accounted for", 1)
    assert failure.detail == says.format(p=consortium.participants[FAULTY].address, o=OUTSIDER)
