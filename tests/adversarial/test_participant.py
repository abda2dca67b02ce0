"""A malicious participant can leave a round, never break it, buy influence, or frame anyone.

Each test plays one participant (index 4, or several) against the real coordinator, chain
and store: what it sends is stopped or excluded with the right reason, the round goes on
with the honest ones, and `verify` agrees with what the chain recorded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adversarial.cast import Altered, Cast
from fl_chain import envelope, protocol
from fl_chain.chain.federation import ExclusionReason, RoundStatus
from fl_chain.codec import encode_model, schema_hash
from fl_chain.envelope import UpdateHeader
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Greeting, MalformedMessage, Ticket
from fl_chain.participant import Trained
from fl_chain.verify.audit import audit
from fl_chain.verify.findings import Status

ATTACKER = 4


def receipt_changed(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(records: dict[str, Any]) -> dict[str, Any]:
        receipt = {key: value for key, value in records["receipt"].items() if fields.get(key, 0) is not None}
        receipt.update({key: value for key, value in fields.items() if value is not None})
        return {**records, "receipt": receipt}

    return change


def keys(cast: Cast) -> list[OpeningKey]:
    return [OpeningKey(v.address, "validator", v.x25519_private) for v in cast.consortium.validators]


def accepted_with(cast: Cast, round_number: int = 1) -> tuple[int, int]:
    state = cast.ledger.round(round_number)
    assert state.status == RoundStatus.ACCEPTED, cast.said
    return state.included, state.commitments


def test_an_honest_federation_is_accepted_and_verifies(cast: Cast) -> None:
    cast.coordinator(rounds=2).run()
    assert accepted_with(cast, 1) == accepted_with(cast, 2) == (5, 5)
    result = audit(cast.federation, keys(cast))
    assert result.findings.ok, [f.describe() for f in result.findings.failures]


MALFORMED = [
    pytest.param({"round": 2}, "is for round 2 attempt 1, not round 1 attempt 1", id="another round"),
    pytest.param({"attempt": 7}, "is for round 1 attempt 7", id="another attempt"),
    pytest.param({"examples": 2**64}, "examples must be an integer in [1, 18446744073709551615]",
                 id="examples out of range"),
    pytest.param({"examples": 2**64 - 1}, "claims 18446744073709551615 examples, above its cap of 40",
                 id="examples above the cap"),
    pytest.param({"examples": 0}, "examples must be an integer in [1", id="no examples"),
    pytest.param({"examples": "many"}, "examples must be an integer", id="examples not a number"),
    pytest.param({"r": "00" * 33}, "r must be 32 bytes in hex", id="33-byte signature part"),
    pytest.param({"vs": "zz"}, "vs must be 32 bytes in hex", id="signature not hex"),
    pytest.param({"participant": "not-an-address"}, "participant is not an Ethereum address", id="not an address"),
    pytest.param({"cid": "bafy-not-a-cid"}, "cid is not a CID", id="bad CID"),
    pytest.param({"cid": None}, "lacks the field 'cid'", id="missing field"),
]


@pytest.mark.parametrize(("fields", "says"), MALFORMED)
def test_a_malformed_receipt_excludes_its_sender_and_the_round_goes_on(cast: Cast, fields: dict[str, Any],
                                                                      says: str) -> None:
    attacker = cast.address(ATTACKER)
    cast.coordinator({attacker: Altered(cast.roles[attacker], train=receipt_changed(**fields))}).run()
    assert accepted_with(cast) == (4, 4)
    assert f"excluded {attacker}: attempt 1: " in cast.said and says in cast.said


def test_a_receipt_for_another_participant_or_signed_by_another_is_refused(cast: Cast) -> None:
    attacker, victim = cast.address(ATTACKER), cast.address(0)
    impersonating = receipt_changed(participant=victim)

    def forged(records: dict[str, Any]) -> dict[str, Any]:  # a signature that recovers to someone else
        return {**records, "receipt": {**records["receipt"], "r": "11" * 32}}

    cast.coordinator({attacker: Altered(cast.roles[attacker], train=impersonating),
                      cast.address(3): Altered(cast.roles[cast.address(3)], train=forged)}).run()
    assert accepted_with(cast) == (3, 3)
    assert f"the receipt from {attacker} is for another participant, {victim}" in cast.said
    assert f"the receipt from {cast.address(3)} carries a signature that is not" in cast.said
    assert not cast.ledger.contract.events.CommitmentRefused().get_logs(from_block=0)  # nobody accused on chain


def test_a_missing_record_or_a_crash_is_an_exclusion_not_a_crash(cast: Cast) -> None:
    attacker, crasher = cast.address(ATTACKER), cast.address(3)

    def crash(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the participant fell over")

    no_receipt = Altered(cast.roles[attacker], train=lambda records: {"metrics": records["metrics"]})
    crashing = Altered(cast.roles[crasher])
    crashing.train = crash  # type: ignore[method-assign]
    cast.coordinator({attacker: no_receipt, crasher: crashing}).run()
    assert accepted_with(cast) == (3, 3)
    assert f"excluded {attacker}: attempt 1: the receipt from {attacker} is not a record" in cast.said
    assert f"excluded {crasher}: attempt 1: failed to train: the participant fell over" in cast.said


class Trains:
    """A participant whose local training produces what `change` makes of the honest result."""

    def __init__(self, honest: Any, change: Callable[[Trained], Trained]) -> None:
        self.role = dataclasses.replace(honest, train_fn=lambda base, ticket: change(honest.train_fn(base, ticket)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.role, name)


def test_claiming_more_examples_than_its_cap_buys_no_influence(cast: Cast) -> None:
    attacker = cast.address(ATTACKER)
    cap = cast.ledger.member(attacker).example_cap
    inflated = Trains(cast.roles[attacker], lambda trained: dataclasses.replace(trained, examples=cap + 1))
    cast.coordinator({attacker: inflated}).run()
    assert accepted_with(cast) == (4, 4)
    assert f"the receipt from {attacker} claims {cap + 1} examples, above its cap of {cap}" in cast.said
    # even relayed by someone else, the contract refuses it
    ticket = protocol.open_round(cast.federation, cast.consortium.aggregator, 2)
    base = protocol.fetch_global_model(cast.federation, ticket)
    signed = protocol.commit_update(cast.federation, cast.participant(ATTACKER), ticket, base, cap + 1)
    outcome = protocol.relay(cast.federation, cast.participant(0), [signed])
    assert outcome is not None and [reason.name for _, reason in outcome.refused] == ["TOO_MANY_EXAMPLES"]


@pytest.mark.parametrize("poison", [
    pytest.param(lambda t: np.full_like(t, np.finfo(np.float32).max), id="float32 max"),
    pytest.param(lambda t: t * 1e6, id="model replacement, scaled"),
])
def test_a_huge_finite_update_is_excluded_as_out_of_bounds_and_the_next_round_is_clean(
        cast: Cast, poison: Callable[[np.ndarray], np.ndarray]) -> None:
    attacker = cast.address(ATTACKER)

    def boost(trained: Trained) -> Trained:
        return dataclasses.replace(trained, tensors={k: poison(v + 0.5) for k, v in trained.tensors.items()})

    cast.coordinator({attacker: Trains(cast.roles[attacker], boost)}, rounds=2).run()
    assert accepted_with(cast, 1) == accepted_with(cast, 2) == (4, 5)
    assert cast.ledger.exclusions(1) == [(attacker, ExclusionReason.OUT_OF_BOUNDS)]
    model = protocol.load_model(cast.federation.store, cast.ledger.latest_accepted()[1])
    assert all(np.isfinite(t).all() and np.abs(t).max() < 10 for t in model.values())
    result = audit(cast.federation, keys(cast)[:1])
    assert result.findings.ok, [f.describe() for f in result.findings.failures]
    [judged] = [f for f in result.findings.items if f.check == "exclusion justified" and f.round == 1]
    assert judged.status == Status.PASSED


def test_a_round_whose_valid_updates_fall_below_the_quorum_fails_on_chain_and_the_run_stops_resumably(
        cast: Cast) -> None:
    def poisoned(index: int) -> Trains:
        return Trains(cast.roles[cast.address(index)],
                      lambda t: dataclasses.replace(t, tensors={k: v + 1e4 for k, v in t.tensors.items()}))

    attackers = {cast.address(i): poisoned(i) for i in (2, 3, 4)}  # three of five: two valid, quorum three
    with pytest.raises(protocol.ProtocolError, match="round 1 failed 2 attempts in a row"):
        cast.coordinator(attackers, max_attempts=2).run()
    assert cast.ledger.round(1).status == RoundStatus.FAILED and cast.ledger.round(1).attempt == 2
    assert "2 valid updates, below the quorum of 3; failing it on chain and retrying" in cast.said
    # resumed once the poisoners mend their ways, the same federation carries on from the chain
    cast.coordinator().run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED and cast.ledger.round(1).attempt == 3


class _Absent:
    def train(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("gone")

    attest = evaluate = train


def blob_header(cast: Cast, ticket: Ticket, tensors: dict[str, np.ndarray], examples: int,
                **fields: Any) -> UpdateHeader:
    header = UpdateHeader(cast.federation.address, cast.federation.chain_id, ticket.round, cast.address(ATTACKER),
                          schema_hash(tensors), examples)
    return dataclasses.replace(header, **fields)


class SendsBlob:
    """A participant that stores and signs a blob of its own making instead of its update."""

    def __init__(self, cast: Cast, make: Callable[[Ticket, dict[str, np.ndarray], int], bytes]) -> None:
        self.cast, self.make = cast, make
        self.honest = cast.roles[cast.address(ATTACKER)]

    def train(self, payload: dict[str, Any]) -> dict[str, Any]:
        ticket = Ticket.from_record(payload)
        base = protocol.fetch_global_model(self.cast.federation, ticket)
        trained = self.honest.train_fn(base, ticket)
        cid = self.cast.federation.store.put(self.make(ticket, trained.tensors, trained.examples))
        signed = self.cast.ledger.sign(self.cast.participant(ATTACKER).account, ticket.round, ticket.attempt, cid,
                                       trained.examples)
        from fl_chain.messages import Receipt

        return {"receipt": Receipt(signed).to_record(), "metrics": {}}

    def attest(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.honest.attest(payload)

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.honest.evaluate(payload)


def recipients(cast: Cast) -> list[bytes]:
    return protocol.update_recipients(cast.federation, 1)


def test_a_payload_declaring_an_impossible_shape_is_an_exclusion(cast: Cast) -> None:
    def impossible(ticket: Ticket, tensors: dict[str, np.ndarray], examples: int) -> bytes:
        header = json.dumps({"b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                             "w": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [4, 4]}}).encode()
        header += b" " * (-len(header) % 8)
        payload = len(header).to_bytes(8, "little") + header + bytes(4)
        declared = blob_header(cast, ticket, tensors, examples)
        return envelope.seal_encoded(payload, declared, recipients(cast))

    cast.coordinator({cast.address(ATTACKER): SendsBlob(cast, impossible)}).run()
    assert accepted_with(cast) == (4, 5)
    assert cast.ledger.exclusions(1) == [(cast.address(ATTACKER), ExclusionReason.WRONG_SHAPE)]
    assert "which no array can have" in cast.said


def split_view(cast: Cast, opens_for_aggregator: bool) -> Callable[[Ticket, dict[str, np.ndarray], int], bytes]:
    """An envelope whose content key is wrapped as sealed for one side and as another key
    for the other: AES-GCM alone would let the aggregator and the validators disagree."""

    def make(ticket: Ticket, tensors: dict[str, np.ndarray], examples: int) -> bytes:
        blob = envelope.seal_encoded(encode_model(tensors, {}), blob_header(cast, ticket, tensors, examples),
                                     recipients(cast))
        parsed = envelope._parse(blob)
        aggregator_key = cast.consortium.aggregator.x25519_public
        other_key = AESGCM.generate_key(bit_length=256)
        ephemeral = envelope._ephemeral_of(other_key)  # a wrap that authenticates, of another key
        rewrapped = bytearray(blob)
        for recipient, wrapped in parsed.wrapped_keys.items():
            if (recipient == aggregator_key) != opens_for_aggregator:
                replacement = envelope._wrap(other_key, ephemeral, parsed.ephemeral_public, recipient,
                                             parsed.wrap_context)
                at = blob.index(recipient + wrapped) + len(recipient)
                rewrapped[at: at + len(wrapped)] = replacement
        return bytes(rewrapped)

    return make


@pytest.mark.parametrize("opens_for_aggregator", [True, False], ids=["opens for the aggregator only",
                                                                     "opens for the validators only"])
def test_a_split_view_envelope_opens_for_nobody(cast: Cast, opens_for_aggregator: bool) -> None:
    cast.coordinator({cast.address(ATTACKER): SendsBlob(cast, split_view(cast, opens_for_aggregator))}).run()
    assert accepted_with(cast) == (4, 5)  # validators agree with the exclusion: accepted
    assert cast.ledger.exclusions(1) == [(cast.address(ATTACKER), ExclusionReason.UNDECRYPTABLE)]
    aggregator_key = OpeningKey(cast.consortium.aggregator.address, "aggregator",
                                cast.consortium.aggregator.x25519_private)
    result = audit(cast.federation, [aggregator_key, *keys(cast)])
    assert result.findings.ok, [f.describe() for f in result.findings.failures]  # nobody is blamed


def test_a_direct_commitment_landing_while_the_aggregator_aggregates_is_excluded_as_late(cast: Cast) -> None:
    late = cast.address(ATTACKER)
    coordinator = cast.coordinator({late: _Absent()})
    collect = protocol.collect

    def collect_then_commit(*args: Any, **kwargs: Any) -> protocol.CollectedUpdates:
        collected = collect(*args, **kwargs)
        ticket = Ticket(1, cast.ledger.round(1).attempt, cast.ledger.round(1).base, cast.ledger.round(1).deadline)
        base = protocol.fetch_global_model(cast.federation, ticket)
        signed = protocol.commit_update(cast.federation, cast.participant(ATTACKER), ticket, base, 10)
        cast.ledger.commit(cast.participant(ATTACKER).account, 1, signed.commitment.cid, 10)
        return collected

    protocol.collect = collect_then_commit  # type: ignore[assignment]
    try:
        coordinator.run()
    finally:
        protocol.collect = collect  # type: ignore[assignment]
    assert accepted_with(cast) == (4, 5)
    assert cast.ledger.exclusions(1) == [(late, ExclusionReason.LATE)]
    assert f"{late} committed to round 1 after the aggregator had read the round's commitments" in cast.said
    result = audit(cast.federation, keys(cast))
    assert result.findings.ok, [f.describe() for f in result.findings.failures]


def test_an_evaluation_that_is_not_the_participants_signed_word_is_left_out(cast: Cast) -> None:
    attacker = cast.address(ATTACKER)

    def boasts(records: dict[str, Any]) -> dict[str, Any]:
        evaluation = {**records["evaluation"], "metrics": json.dumps({"accuracy": 1.0, "loss": 0.0})}
        return {**records, "evaluation": evaluation}

    cast.coordinator({attacker: Altered(cast.roles[attacker], evaluate=boasts)}).run()
    assert f"the evaluation of {attacker} is left out: the evaluation of {attacker} is not signed by" in cast.said
    evaluations = [json.loads(line) for line in (cast.directory / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert attacker not in {e["participant"] for e in evaluations} and len(evaluations) == 4


def test_a_greeting_proves_its_member_or_speaks_for_nobody(cast: Cast) -> None:
    federation, chain_id = cast.federation.address, cast.federation.chain_id
    challenge, node = b"\x07" * 16, 4242
    member = cast.participant(0)
    greeting = Greeting.answer(member.account, federation, chain_id, node, challenge)
    assert Greeting.from_record(greeting.to_record(), federation=federation, chain_id=chain_id, node=node,
                                challenge=challenge).address == member.address
    impostor = Greeting.answer(cast.participant(1).account, federation, chain_id, node, challenge)
    claimed = {**impostor.to_record(), "address": member.address}
    with pytest.raises(MalformedMessage, match=f"claims to speak for {member.address} without its signature"):
        Greeting.from_record(claimed, federation=federation, chain_id=chain_id, node=node, challenge=challenge)
    for replayed in ({"node": node + 1, "challenge": challenge}, {"node": node, "challenge": b"\x08" * 16}):
        with pytest.raises(MalformedMessage, match="without its signature"):
            Greeting.from_record(greeting.to_record(), federation=federation, chain_id=chain_id, **replayed)


def sealed_for(cast: Cast, keep: Callable[[bytes], bool]) -> Callable[[Ticket, dict[str, np.ndarray], int], bytes]:
    """An honest, in-bounds update sealed for only some of the round's recipients."""

    def make(ticket: Ticket, tensors: dict[str, np.ndarray], examples: int) -> bytes:
        chosen = [key for key in recipients(cast) if keep(key)]
        return envelope.seal_encoded(encode_model(tensors, {}), blob_header(cast, ticket, tensors, examples), chosen)

    return make


@pytest.mark.parametrize("for_aggregator", [True, False], ids=["aggregator only", "validators only"])
def test_an_update_not_sealed_for_every_recipient_of_the_round_is_excluded_by_all(cast: Cast,
                                                                               for_aggregator: bool) -> None:
    aggregator_key = cast.consortium.aggregator.x25519_public
    make = sealed_for(cast, lambda key: (key == aggregator_key) == for_aggregator)
    cast.coordinator({cast.address(ATTACKER): SendsBlob(cast, make)}, rounds=2).run()
    assert accepted_with(cast, 1) == (4, 5) and accepted_with(cast, 2)[0] == 4  # no wedge: every round accepted
    assert cast.ledger.exclusions(1) == [(cast.address(ATTACKER), ExclusionReason.UNDECRYPTABLE)]
    assert "not for exactly the round's" in cast.said
    result = audit(cast.federation, keys(cast))
    assert result.findings.ok, [f.describe() for f in result.findings.failures]


def test_a_header_nested_a_hundred_thousand_deep_is_an_exclusion_not_a_crash(cast: Cast) -> None:
    def deep(ticket: Ticket, tensors: dict[str, np.ndarray], examples: int) -> bytes:
        header = b"[" * 100_000 + b"]" * 100_000
        return b"FLCE\x02" + len(header).to_bytes(4, "big") + header + bytes(200)

    cast.coordinator({cast.address(ATTACKER): SendsBlob(cast, deep)}).run()
    assert accepted_with(cast) == (4, 5)
    assert cast.ledger.exclusions(1) == [(cast.address(ATTACKER), ExclusionReason.UNDECRYPTABLE)]
    assert "longer than any header" in cast.said
    assert audit(cast.federation, keys(cast)).findings.ok


@pytest.mark.parametrize("metrics", [
    pytest.param("[" * 100_000 + "]" * 100_000, id="nested 100000 deep"),
    pytest.param('{"accuracy": 1' + "0" * 400 + "}", id="a 401-digit accuracy"),
    pytest.param('{"accuracy": 1e308}', id="accuracy 1e308"),
])
def test_an_evaluation_with_impossible_figures_is_left_out_not_a_crash(cast: Cast, metrics: str) -> None:
    attacker = cast.address(ATTACKER)
    altered = Altered(cast.roles[attacker], evaluate=lambda records: {
        **records, "evaluation": {**records["evaluation"], "metrics": metrics}})
    cast.coordinator({attacker: altered}).run()
    assert accepted_with(cast) == (5, 5)
    assert f"the evaluation of {attacker} is left out" in cast.said


def test_the_same_training_request_asked_again_is_answered_once(cast: Cast) -> None:
    participant = cast.participant(0)
    watched: list[Any] = []
    role = dataclasses.replace(cast.roles[participant.address], watch=watched.append)
    ticket = protocol.open_round(cast.federation, cast.consortium.aggregator, 1)
    first = role.train(ticket.to_record())
    assert all(role.train(ticket.to_record()) is first for _ in range(50))  # a flood costs nothing more
    assert len(watched) == 1


def test_unsigned_figures_in_a_reply_never_stand_for_the_signed_ones(cast: Cast) -> None:
    attacker = cast.address(ATTACKER)
    boast = {"accuracy": 0.999, "loss": 0.0}
    altered = Altered(cast.roles[attacker],
                      train=lambda records: {**records, "metrics": {**records["metrics"], **boast}},
                      evaluate=lambda records: {**records, "metrics": {**records["metrics"], **boast}})
    cast.coordinator({attacker: altered}).run()
    rows = (cast.directory / "run" / "metrics.csv").read_text()
    assert "0.999" not in rows  # what metrics.csv says of its accuracy is its signed evaluation


def test_a_flood_of_attestation_requests_is_judged_once(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    cast.coordinator().run()
    judged = []
    judge = protocol.judge
    monkeypatch.setattr(protocol, "judge", lambda *args, **kwargs: judged.append(1) or judge(*args, **kwargs))
    validator = cast.consortium.validators[0]
    role = cast.roles[validator.address]
    for _ in range(30):
        assert role.attest({"round": 1})["attestation"]["model"] == ""  # attested already: no model again
    assert judged == []
