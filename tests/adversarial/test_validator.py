"""Validators cannot rubber-stamp, and a dissent is evidence the chain keeps and verify judges.

Malicious validators are responders whose attestation is not their own judgement: they
attest whatever the aggregator finalized, or dissent from an honest result. With the
committee frozen at the round's opening, a dissent blocking acceptance, and verify
settling every dissent on an accepted round, neither buys a wrong model or a silent one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from adversarial.cast import Cast, found_cast
from fl_chain import protocol
from fl_chain.aggregation import WeightedUpdate
from fl_chain.chain.errors import TransactionReverted
from fl_chain.chain.federation import Role, RoundStatus
from fl_chain.identity import Identity
from fl_chain.keyfile import OpeningKey
from fl_chain.protocol import CollectedUpdates, ProtocolError
from fl_chain.storage.cid import Cid
from fl_chain.verify.audit import audit


class RubberStamp:
    """A validator that attests the finalized model without re-computing anything."""

    def __init__(self, cast: Cast, index: int) -> None:
        self.cast, self.identity, self.honest = cast, cast.participant(index), cast.roles[cast.address(index)]

    def train(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.honest.train(payload)

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.honest.evaluate(payload)

    def attest(self, payload: dict[str, Any]) -> dict[str, Any]:
        round_number = int(payload["round"])
        model = self.cast.ledger.round(round_number).global_model
        return {"attestation": {}, "metrics": {"gas": float(protocol.attest(self.cast.federation, self.identity,
                                                                            round_number, model))}}


class Dissenter(RubberStamp):
    """A validator that dissents from whatever was finalized."""

    def attest(self, payload: dict[str, Any]) -> dict[str, Any]:
        nonsense = Cid.parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        protocol.attest(self.cast.federation, self.identity, int(payload["round"]), nonsense)
        return {"attestation": {}, "metrics": {}}


def keys(cast: Cast) -> list[OpeningKey]:
    return [OpeningKey(v.address, "validator", v.x25519_private) for v in cast.consortium.validators]


def validators_in_order(cast: Cast) -> list[int]:
    """Participant indices of the validators, in the order the coordinator asks them."""
    ordered = sorted((v.address for v in cast.consortium.validators), key=lambda a: int(a, 16))
    return [next(i for i in range(len(cast.consortium.participants)) if cast.address(i) == a) for a in ordered]


def test_two_rubber_stamps_before_one_honest_dissent_get_a_wrong_model_accepted_and_verify_fails_it(
        cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, honest = validators_in_order(cast)
    honest_collect = protocol.collect

    def cheat(*args: Any, **kwargs: Any) -> CollectedUpdates:  # the aggregator doubles one update
        collected = honest_collect(*args, **kwargs)
        head, *rest = collected.updates
        doubled = WeightedUpdate(head.sender, head.examples, {k: v * 2 for k, v in head.tensors.items()})
        return dataclasses.replace(collected, updates=(doubled, *rest))

    monkeypatch.setattr(protocol, "collect", cheat)
    stamps = {cast.address(first): RubberStamp(cast, first), cast.address(second): RubberStamp(cast, second)}
    cast.coordinator(stamps).run()  # the honest validator answers last: accepted before its dissent
    state = cast.ledger.round(1)
    assert state.status == RoundStatus.ACCEPTED and state.dissents == 1
    keyless = audit(cast.federation, [])
    assert any(f.check == "dissents judged" for f in keyless.findings.failures)  # keyless verify does not pass it
    keyed = audit(cast.federation, keys(cast)[2:])
    checks = {f.check for f in keyed.findings.failures}
    assert {"re-aggregation", "dissents judged"} <= checks
    [judged] = [f for f in keyed.findings.failures if f.check == "dissents judged"]
    assert judged.participant == cast.address(honest) and "dissented rightly" in judged.detail


def test_a_dissent_that_arrives_first_blocks_acceptance(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _, _ = validators_in_order(cast)
    with pytest.raises(ProtocolError, match="failed 1 attempts in a row"):
        cast.coordinator({cast.address(first): Dissenter(cast, first)}, max_attempts=1).run()
    assert cast.ledger.round(1).status == RoundStatus.FAILED
    assert "1 committee validator(s) dissent from the finalized model" in cast.said


def test_an_unfounded_dissent_after_acceptance_is_judged_unfounded_with_a_key(cast: Cast) -> None:
    *_, last = validators_in_order(cast)
    cast.coordinator({cast.address(last): Dissenter(cast, last)}).run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED and cast.ledger.round(1).dissents == 1
    keyless = audit(cast.federation, [])
    assert not keyless.findings.ok  # a dissent only a key can settle
    keyed = audit(cast.federation, keys(cast)[:1])
    assert keyed.findings.ok, [f.describe() for f in keyed.findings.failures]
    [judged] = [f for f in keyed.findings.items if f.check == "dissents judged"]
    assert judged.participant == cast.address(last) and "unfounded" in judged.detail


def test_validators_added_mid_round_or_off_the_committee_do_not_count(tmp_path: Any) -> None:
    cast = found_cast(tmp_path, committee_size=2)
    admin, aggregator = cast.consortium.admin.account, cast.consortium.aggregator
    ticket = protocol.open_round(cast.federation, aggregator, 1)
    newcomer = Identity.derive("adversarial", "validator admitted mid-round")
    cast.ledger.chain.transfer(admin, newcomer.address, 10**18)
    cast.ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.VALIDATOR)])
    base = protocol.fetch_global_model(cast.federation, ticket)
    receipts = [protocol.commit_update(cast.federation, p, ticket, base, 10) for p in cast.consortium.participants]
    protocol.relay(cast.federation, aggregator, receipts)
    collected = protocol.collect(cast.federation, aggregator.x25519_private, 1,
                                 protocol.UpdateRules.for_round(cast.federation, 1))
    _, model = protocol.aggregate(cast.federation, 1, collected, base)
    protocol.finalize(cast.federation, aggregator, 1, model, collected)
    with pytest.raises(TransactionReverted, match="not on the committee drawn to attest round 1"):
        protocol.attest(cast.federation, newcomer, 1, model)
    committee = [v for v in cast.consortium.validators if cast.ledger.is_on_committee(1, v.address)]
    outside = [v for v in cast.consortium.validators if v not in committee]
    assert len(committee) == 2 and len(outside) == 1
    with pytest.raises(TransactionReverted, match="not on the committee"):
        protocol.attest(cast.federation, outside[0], 1, model)
    for validator in committee:
        protocol.attest(cast.federation, validator, 1, protocol.judge(cast.federation, validator, 1).model)
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED
    result = audit(cast.federation, keys(cast)[:1])
    assert result.findings.ok, [f.describe() for f in result.findings.failures]
