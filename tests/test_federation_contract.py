"""The Federation contract's rules, through the Ledger, on the embedded chain and on anvil."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from eth_abi import encode
from eth_utils import keccak
from web3.logs import DISCARD

from fl_chain.chain.chain import Chain
from fl_chain.chain.commitment import SignedCommitment, recover_signer
from fl_chain.chain.committee import committee_seed, draw_committee
from fl_chain.chain.errors import NotAFederation, TransactionReverted
from fl_chain.chain.federation import ExclusionReason, Refusal, Role, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.storage.cid import Cid

from conftest import Consortium, deploy_federation, genesis_cid

# RFC 7748 encodings of the points of small order (and non-canonical ones), top bit clear
WEAK_X25519_KEYS = (
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
)
X25519Error = ValueError


def update_cid(label: str) -> Cid:
    return Cid(0x70, hashlib.sha256(label.encode()).digest())


def sign_all(ledger: Ledger, consortium: Consortium, round_number: int, attempt: int, count: int) -> list[SignedCommitment]:
    return [
        ledger.sign(p.account, round_number, attempt, update_cid(f"{p.address}/{round_number}"), 10 + i)
        for i, p in enumerate(consortium.participants[:count])
    ]


def accept_round(ledger: Ledger, consortium: Consortium, round_number: int, base: Cid) -> Cid:
    """Runs one complete round with three participants and two validators."""
    state = ledger.open_round(consortium.aggregator.account, round_number, base)
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, round_number, state.attempt, 3))
    global_model = update_cid(f"global/{round_number}")
    included = [p.address for p in consortium.participants[:3]]
    ledger.finalize(consortium.aggregator.account, round_number, global_model, included)
    for validator in consortium.validators[:2]:
        ledger.attest(validator.account, round_number, global_model)
    return global_model


@pytest.fixture
def ledger(chain: Chain, consortium: Consortium) -> Ledger:
    return deploy_federation(chain, consortium)


def test_a_full_round_is_accepted_and_auditable(ledger: Ledger, consortium: Consortium) -> None:
    state = ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    assert (state.status, state.attempt, state.base) == (RoundStatus.OPEN, 1, genesis_cid())
    signed = sign_all(ledger, consortium, 1, 1, 4)
    outcome = ledger.relay(consortium.aggregator.account, signed)
    assert outcome.accepted == tuple(p.address for p in consortium.participants[:4])
    assert outcome.refused == ()

    records = ledger.commitments(1)
    assert [(r.participant, r.cid, r.examples) for r in records] == [
        (s.commitment.participant, s.commitment.cid, s.commitment.examples) for s in signed
    ]
    log = b"\x00" * 32  # the commitment log lets anyone prove the events are complete
    for r in records:
        log = keccak(encode(["bytes32", "address", "bytes32", "uint32", "uint64"],
                            [log, r.participant, r.cid.digest, r.cid.codec, r.examples]))
    assert ledger.round(1).commitment_log == log
    assert sorted(ledger.committed(1)) == sorted(outcome.accepted)

    global_model = update_cid("global/1")
    included = [p.address for p in consortium.participants[:3]]
    excluded = [(consortium.participants[3].address, ExclusionReason.NON_FINITE)]
    ledger.finalize(consortium.aggregator.account, 1, global_model, included, excluded)
    assert ledger.round(1).status == RoundStatus.FINALIZED
    assert sorted(ledger.included(1)) == sorted(included)
    assert ledger.exclusions(1) == excluded

    ledger.attest(consortium.validators[0].account, 1, global_model)
    assert ledger.round(1).status == RoundStatus.FINALIZED  # threshold is two
    ledger.attest(consortium.validators[1].account, 1, global_model)
    assert ledger.round(1).status == RoundStatus.ACCEPTED
    assert ledger.latest_accepted() == (1, global_model)
    assert ledger.has_attested(1, consortium.validators[1].address)


def test_direct_commitment_by_the_participant(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    participant = consortium.participants[0]
    ledger.commit(participant.account, 1, update_cid("direct"), 42)
    [record] = ledger.commitments(1)
    assert (record.participant, record.cid, record.examples) == (participant.address, update_cid("direct"), 42)
    assert ledger.round(1).commitments == 1


def test_non_member_commitment_is_refused(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    with pytest.raises(TransactionReverted, match="is not a member with the participant role") as caught:
        ledger.commit(consortium.outsider.account, 1, update_cid("x"), 5)
    assert caught.value.error == "Refused"
    signed = ledger.sign(consortium.outsider.account, 1, 1, update_cid("x"), 5)
    outcome = ledger.relay(consortium.aggregator.account, [signed])
    assert outcome.refused == ((consortium.outsider.address, Refusal.NOT_PARTICIPANT),)
    assert ledger.round(1).commitments == 0


def test_a_validator_cannot_commit_as_a_participant(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    with pytest.raises(TransactionReverted, match="participant role"):
        ledger.commit(consortium.validators[0].account, 1, update_cid("v"), 5)


def test_late_commitment_is_refused(ledger: Ledger, consortium: Consortium, chain: Chain) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    signed = sign_all(ledger, consortium, 1, 1, 2)
    chain.increase_time(900)  # past the 600 s deadline, with room for block-time drift
    with pytest.raises(TransactionReverted, match="committed after the deadline of round 1"):
        ledger.commit(consortium.participants[0].account, 1, update_cid("late"), 5)
    with pytest.raises(TransactionReverted, match="deadline has passed"):
        ledger.relay(consortium.aggregator.account, signed)
    assert ledger.round(1).commitments == 0


def test_duplicate_commitment_is_refused(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    participant = consortium.participants[0]
    ledger.commit(participant.account, 1, update_cid("first"), 5)
    with pytest.raises(TransactionReverted, match="already committed in round 1"):
        ledger.commit(participant.account, 1, update_cid("second"), 5)
    again = ledger.sign(participant.account, 1, 1, update_cid("third"), 5)
    outcome = ledger.relay(consortium.aggregator.account, [again, *sign_all(ledger, consortium, 1, 1, 3)[1:]])
    assert outcome.refused == ((participant.address, Refusal.ALREADY_COMMITTED),)
    assert len(outcome.accepted) == 2
    assert [r.cid for r in ledger.commitments(1) if r.participant == participant.address] == [update_cid("first")]


def test_signature_replayed_on_another_round_is_refused(ledger: Ledger, consortium: Consortium) -> None:
    base = accept_round(ledger, consortium, 1, genesis_cid())
    ledger.open_round(consortium.aggregator.account, 2, base)
    old = ledger.sign(consortium.participants[4].account, 1, 1, update_cid("r1"), 5)
    replayed = dataclasses.replace(old, commitment=dataclasses.replace(old.commitment, round=2))
    outcome = ledger.relay(consortium.aggregator.account, [replayed])
    assert outcome.refused == ((consortium.participants[4].address, Refusal.BAD_SIGNATURE),)


def test_signature_for_another_contract_or_chain_is_refused(
    ledger: Ledger, consortium: Consortium, chain: Chain
) -> None:
    other = deploy_federation(chain, consortium)
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    participant = consortium.participants[0]
    for_other_contract = other.sign(participant.account, 1, 1, update_cid("a"), 5)
    assert recover_signer(for_other_contract, chain.chain_id, other.address) == participant.address
    from fl_chain.chain.commitment import Commitment, sign_commitment

    commitment = Commitment(participant.address, 1, 1, update_cid("b"), 5)
    for_other_chain = sign_commitment(participant.account, commitment, chain.chain_id + 1, ledger.address)
    for signed in (for_other_contract, for_other_chain):
        outcome = ledger.relay(consortium.aggregator.account, [signed])
        assert outcome.refused == ((participant.address, Refusal.BAD_SIGNATURE),)
    assert ledger.round(1).commitments == 0


def test_finalize_below_quorum_fails_the_attempt_and_uncommitted_participants_are_refused(
    ledger: Ledger, consortium: Consortium
) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 3))
    committed = [p.address for p in consortium.participants[:3]]
    uncommitted = consortium.participants[4]
    index = ledger.member(uncommitted.address).index
    with pytest.raises(TransactionReverted, match=f"member #{index} did not commit in round 1"):
        ledger.finalize(consortium.aggregator.account, 1, update_cid("g"), [*committed, uncommitted.address], seen=3)
    with pytest.raises(TransactionReverted, match="is not the federation's current aggregator"):
        ledger.finalize(consortium.participants[0].account, 1, update_cid("g"), committed)
    assert ledger.round(1).status == RoundStatus.OPEN
    # two valid updates of three are below the quorum: the attempt fails, its exclusion recorded
    receipt = ledger.finalize(consortium.aggregator.account, 1, update_cid("g"), committed[:2],
                              [(committed[2], ExclusionReason.OUT_OF_BOUNDS)])
    failed = ledger.contract.events.RoundFailed().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["attempt"], e["args"]["atStatus"]) for e in failed] == [(1, RoundStatus.OPEN)]
    assert ledger.exclusions(1) == [(committed[2], ExclusionReason.OUT_OF_BOUNDS)]
    assert (ledger.round(1).status, ledger.round(1).included) == (RoundStatus.FAILED, 2)
    assert ledger.open_round(consortium.aggregator.account, 1, genesis_cid()).attempt == 2


def test_a_commitment_after_the_aggregator_read_the_round_is_excluded_as_late(
    ledger: Ledger, consortium: Consortium
) -> None:
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))
    seen = [record.participant for record in ledger.commitments(1)]
    late = consortium.participants[4]
    ledger.commit(late.account, 1, update_cid("late"), 7)  # while the aggregator aggregates
    with pytest.raises(TransactionReverted, match="claims to have read 5 commitments of round 1, which has 4"):
        ledger.finalize(aggregator, 1, update_cid("g"), seen, seen=5)
    with pytest.raises(TransactionReverted, match="lateness is for the contract to decide"):
        ledger.finalize(aggregator, 1, update_cid("g"), seen, [(late.address, ExclusionReason.LATE)], seen=4)
    receipt = ledger.finalize(aggregator, 1, update_cid("g"), seen, seen=3)
    events = ledger.contract.events.Excluded().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["participant"], e["args"]["reason"]) for e in events] == [(late.address, ExclusionReason.LATE)]
    assert ledger.round(1).status == RoundStatus.FINALIZED


def test_finalize_records_each_exclusion_with_its_reason(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 5))
    included = [p.address for p in consortium.participants[:3]]
    excluded = {consortium.participants[3].address: ExclusionReason.UNAVAILABLE,
                consortium.participants[4].address: ExclusionReason.UNDECRYPTABLE}
    descending = sorted(excluded.items(), key=lambda item: int(item[0], 16), reverse=True)
    receipt = ledger.finalize(consortium.aggregator.account, 1, update_cid("g"), included, descending)
    events = ledger.contract.events.Excluded().process_receipt(receipt, errors=DISCARD)
    assert sorted((e["args"]["round"], e["args"]["participant"], e["args"]["reason"]) for e in events) == sorted(
        (1, address, int(reason)) for address, reason in excluded.items())
    assert [int(e["args"]["participant"], 16) for e in events] == sorted(int(a, 16) for a in excluded)
    assert dict(ledger.exclusions(1)) == excluded
    state = ledger.round(1)
    assert (state.status, state.included, state.commitments) == (RoundStatus.FINALIZED, 3, 5)


def test_finalize_refuses_exclusions_that_do_not_account_for_the_commitments(
    ledger: Ledger, consortium: Consortium
) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 4))
    aggregator, model = consortium.aggregator.account, update_cid("g")
    first, *rest = [p.address for p in consortium.participants[:4]]
    silent, absent, outsider = rest[-1], consortium.participants[4].address, consortium.outsider.address
    cases = [
        ([first, *rest[:2]], [(absent, ExclusionReason.UNAVAILABLE), (silent, ExclusionReason.NON_FINITE)],
         "ExcludedNotCommitted", f"{absent} did not commit in round 1, so there is no update of it to exclude"),
        ([first, *rest[:2]], [(outsider, ExclusionReason.UNAVAILABLE), (silent, ExclusionReason.NON_FINITE)],
         "ExcludedNotCommitted", f"{outsider} did not commit in round 1"),
        ([first, *rest], [(first, ExclusionReason.WRONG_HEADER)],
         "ExcludedAndIncluded", f"{first} is both included and excluded in round 1"),
        ([first, *rest[:2]], [(silent, ExclusionReason.WRONG_SHAPE), (silent, ExclusionReason.NON_FINITE)],
         "ExclusionOutOfOrder", f"must name each participant once, in ascending address order: {silent} is repeated"),
        ([first, *rest[:2]], [(silent, ExclusionReason.NONE)],
         "InvalidExclusionReason", f"the exclusion of {silent} in round 1 gives no reason the aggregator may give"),
        ([first, *rest[:2]], [],
         "CommitmentsUnaccounted", "read 4 commitments of round 1, but 3 are included and 0 excluded: every commitment"),
    ]
    for included, excluded, error, says in cases:
        with pytest.raises(TransactionReverted, match=re.escape(says)) as caught:
            ledger.finalize(aggregator, 1, model, included, excluded, seen=4)
        assert caught.value.error == error
    assert ledger.round(1).status == RoundStatus.OPEN
    ledger.finalize(aggregator, 1, model, [first, *rest[:2]], [(silent, ExclusionReason.WRONG_SHAPE)])
    assert ledger.round(1).status == RoundStatus.FINALIZED


def test_attestation_rules(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    validator = consortium.validators[0]
    with pytest.raises(TransactionReverted, match="round 1 is not finalized"):
        ledger.attest(validator.account, 1, update_cid("g"))
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 3))
    global_model = update_cid("g")
    ledger.finalize(consortium.aggregator.account, 1, global_model, [p.address for p in consortium.participants[:3]])
    with pytest.raises(TransactionReverted, match="is not a member with the validator role"):
        ledger.attest(consortium.participants[0].account, 1, global_model)
    ledger.attest(validator.account, 1, global_model)
    with pytest.raises(TransactionReverted, match="already attested round 1"):
        ledger.attest(validator.account, 1, global_model)
    ledger.attest(consortium.validators[1].account, 1, global_model)
    assert (ledger.round(1).attestations, ledger.round(1).status) == (2, RoundStatus.ACCEPTED)


def test_a_dissent_blocks_acceptance_and_lets_anyone_fail_the_attempt(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 3))
    global_model = update_cid("g")
    ledger.finalize(consortium.aggregator.account, 1, global_model, [p.address for p in consortium.participants[:3]])
    ledger.attest(consortium.validators[0].account, 1, update_cid("what the validator computed"))
    for validator in consortium.validators[1:]:  # two rubber stamps are not enough against one dissent
        ledger.attest(validator.account, 1, global_model)
    state = ledger.round(1)
    assert (state.status, state.attestations, state.dissents) == (RoundStatus.FINALIZED, 2, 1)
    ledger.fail_round(consortium.outsider.account, 1)  # at once: the attempt can never be accepted
    assert ledger.round(1).status == RoundStatus.FAILED


def test_during_the_commit_grace_nothing_is_finalized_early_or_called_late(chain: Chain,
                                                                          consortium: Consortium) -> None:
    ledger = deploy_federation(chain, consortium, commit_grace=60)
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))  # two of five participants missing
    read = [record.participant for record in ledger.commitments(1)]
    with pytest.raises(TransactionReverted, match="participants may still commit themselves") as caught:
        ledger.finalize(aggregator, 1, update_cid("g"), read)
    assert caught.value.error == "CommitWindowOpen"
    censored = consortium.participants[3]
    ledger.commit(censored.account, 1, update_cid("censored"), 7)  # not relayed: it commits itself in time
    chain.increase_time(120)
    with pytest.raises(TransactionReverted, match=f"{censored.address} cannot be excluded as late") as caught:
        ledger.finalize(aggregator, 1, update_cid("g"), read, seen=3)
    assert caught.value.error == "NotLate"
    late = consortium.participants[4]
    ledger.commit(late.account, 1, update_cid("late"), 7)  # after the grace: this one may be late
    ledger.finalize(aggregator, 1, update_cid("g"), [*read, censored.address], seen=4)
    assert ledger.exclusions(1) == [(late.address, ExclusionReason.LATE)]


def test_a_commitment_the_aggregator_relayed_is_never_late(chain: Chain, consortium: Consortium) -> None:
    ledger = deploy_federation(chain, consortium)
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    relayed = sign_all(ledger, consortium, 1, 1, 4)
    ledger.relay(aggregator, relayed)
    with pytest.raises(TransactionReverted, match="cannot be excluded as late"):
        ledger.finalize(aggregator, 1, update_cid("g"), [p.address for p in consortium.participants[:3]], seen=3)


def test_when_every_participant_committed_the_grace_is_not_waited_for(chain: Chain, consortium: Consortium) -> None:
    ledger = deploy_federation(chain, consortium, commit_grace=300)
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, len(consortium.participants)))
    ledger.finalize(aggregator, 1, update_cid("g"), [p.address for p in consortium.participants])
    assert ledger.round(1).status == RoundStatus.FINALIZED


def test_only_validators_admitted_before_the_round_opened_attest_it(ledger: Ledger, consortium: Consortium) -> None:
    admin, aggregator = consortium.admin.account, consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    late_validator = consortium.outsider
    ledger.add_members(admin, [(late_validator.address, late_validator.x25519_public, Role.VALIDATOR)])
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))
    global_model = update_cid("g")
    ledger.finalize(aggregator, 1, global_model, [p.address for p in consortium.participants[:3]])
    assert not ledger.is_on_committee(1, late_validator.address)
    with pytest.raises(TransactionReverted, match="not on the committee drawn to attest round 1") as caught:
        ledger.attest(late_validator.account, 1, global_model)
    assert caught.value.error == "NotOnCommittee"
    assert all(ledger.is_on_committee(1, v.address) for v in consortium.validators)


def test_no_member_both_aggregates_and_validates(chain: Chain, consortium: Consortium) -> None:
    """Else an aggregator appointed mid-round, or switched back after finalizing, could
    attest its own work (the contract also refuses the current aggregator as attester)."""
    ledger = deploy_federation(chain, consortium)
    admin, newcomer = consortium.admin.account, consortium.outsider
    with pytest.raises(TransactionReverted, match="cannot be both the aggregator and a validator") as caught:
        ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.AGGREGATOR | Role.VALIDATOR)])
    assert caught.value.error == "RolesConflict"
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    ledger.relay(consortium.aggregator.account, sign_all(ledger, consortium, 1, 1, 3))
    ledger.finalize(consortium.aggregator.account, 1, update_cid("g"), [p.address for p in consortium.participants[:3]])
    with pytest.raises(TransactionReverted, match="is not a member with the validator role"):
        ledger.attest(consortium.aggregator.account, 1, update_cid("g"))


def test_a_member_comes_back_only_with_the_roles_it_had(chain: Chain, consortium: Consortium) -> None:
    """Else the admin could re-admit a frozen validator as the aggregator, let it finalize,
    switch it back and have it attest its own work."""
    ledger = deploy_federation(chain, consortium)
    admin, validator = consortium.admin.account, consortium.validators[0]
    ledger.remove_member(admin, validator.address)
    with pytest.raises(TransactionReverted, match="was admitted as validator and can only come back as that, not as aggregator") as caught:
        ledger.add_members(admin, [(validator.address, validator.x25519_public, Role.AGGREGATOR)])
    assert caught.value.error == "RolesChanged"
    ledger.add_members(admin, [(validator.address, validator.x25519_public, Role.VALIDATOR)])
    assert ledger.member(validator.address).active


def test_a_validator_removed_mid_round_still_attests_it(chain: Chain, consortium: Consortium) -> None:
    """The committee is frozen when the round opens: an admin cannot silence a dissent by
    removing the validator (nor add one that agrees)."""
    ledger = deploy_federation(chain, consortium)
    aggregator, admin = consortium.aggregator.account, consortium.admin.account
    ledger.open_round(aggregator, 1, genesis_cid())
    honest = consortium.validators[0]
    ledger.remove_member(admin, honest.address)
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))
    ledger.finalize(aggregator, 1, update_cid("g"), [p.address for p in consortium.participants[:3]])
    assert ledger.is_on_committee(1, honest.address)
    ledger.attest(honest.account, 1, update_cid("what the honest validator computed"))
    for colluder in consortium.validators[1:]:
        ledger.attest(colluder.account, 1, update_cid("g"))
    assert (ledger.round(1).status, ledger.round(1).dissents) == (RoundStatus.FINALIZED, 1)


def test_a_committee_is_drawn_from_the_chain_and_only_it_attests(chain: Chain, consortium: Consortium) -> None:
    ledger = deploy_federation(chain, consortium, committee_size=2)
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))
    global_model = update_cid("g")
    receipt = ledger.finalize(aggregator, 1, global_model, [p.address for p in consortium.participants[:3]])
    (finalized,) = ledger.contract.events.Finalized().process_receipt(receipt, errors=DISCARD)
    state = ledger.round(1)
    seed = committee_seed(chain.chain_id, ledger.address, 1, state.attempt, state.commitment_log)
    expected = draw_committee(seed, [v.address for v in consortium.validators], 2)
    assert list(finalized["args"]["committee"]) == expected
    outside = next(v for v in consortium.validators if v.address not in expected)
    assert [ledger.is_on_committee(1, v.address) for v in consortium.validators] == [
        v.address in expected for v in consortium.validators]
    with pytest.raises(TransactionReverted, match="not on the committee"):
        ledger.attest(outside.account, 1, global_model)
    for validator in (v for v in consortium.validators if v.address in expected):
        ledger.attest(validator.account, 1, global_model)
    assert ledger.round(1).status == RoundStatus.ACCEPTED


def test_example_counts_are_capped_at_admission(chain: Chain, consortium: Consortium) -> None:
    ledger = deploy_federation(chain, consortium, max_examples=1000)
    admin, newcomer = consortium.admin.account, consortium.outsider
    with pytest.raises(TransactionReverted, match="example cap of 1001: the federation allows at most 1000"):
        ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.PARTICIPANT, 1001)])
    ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.PARTICIPANT, 40)])
    assert ledger.member(newcomer.address).example_cap == 40
    assert ledger.member(consortium.participants[0].address).example_cap == 1000  # 0 at admission: the maximum
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    with pytest.raises(TransactionReverted, match="claimed more examples in round 1 than the cap"):
        ledger.commit(newcomer.account, 1, update_cid("inflated"), 41)
    greedy = ledger.sign(consortium.participants[0].account, 1, 1, update_cid("greedy"), 2**64 - 1)
    outcome = ledger.relay(consortium.aggregator.account, [greedy])
    assert outcome.refused == ((consortium.participants[0].address, Refusal.TOO_MANY_EXAMPLES),)
    ledger.commit(newcomer.account, 1, update_cid("honest"), 40)


@pytest.mark.parametrize("key", [bytes.fromhex(h) for h in WEAK_X25519_KEYS])
def test_small_order_x25519_keys_are_refused_at_admission(chain: Chain, consortium: Consortium, key: bytes) -> None:
    ledger = deploy_federation(chain, consortium)
    newcomer = consortium.outsider
    for variant in (key, key[:31] + bytes([key[31] | 0x80])):  # X25519 ignores the top bit
        with pytest.raises(X25519Error):  # the reason: nobody can agree a key with it
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(variant))
        with pytest.raises(TransactionReverted, match="is a point of small order") as caught:
            ledger.add_members(consortium.admin.account, [(newcomer.address, variant, Role.VALIDATOR)])
        assert caught.value.error == "WeakX25519Key"


def test_a_relayed_entry_with_a_signature_not_its_own_accuses_nobody(ledger: Ledger, consortium: Consortium) -> None:
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    honest = consortium.participants[0]
    forged = ledger.sign(consortium.outsider.account, 1, 1, update_cid("x"), 5)
    forged = dataclasses.replace(forged, commitment=dataclasses.replace(forged.commitment, participant=honest.address))
    receipt_outcome = ledger.relay(consortium.outsider.account, [forged])
    assert receipt_outcome.refused == ((honest.address, Refusal.BAD_SIGNATURE),)
    refusals = ledger.contract.events.CommitmentRefused().get_logs(from_block=0)
    assert list(refusals) == []  # nothing on chain says the honest participant did anything
    skipped = ledger.contract.events.UnverifiedEntrySkipped().get_logs(from_block=0)
    assert [log["args"]["claimed"] for log in skipped] == [honest.address]


def test_rounds_start_only_from_the_accepted_model(ledger: Ledger, consortium: Consortium) -> None:
    aggregator = consortium.aggregator.account
    with pytest.raises(TransactionReverted, match="must start from the latest accepted model"):
        ledger.open_round(aggregator, 1, update_cid("not genesis"))
    with pytest.raises(TransactionReverted, match="round 2 cannot be opened: the next round is 1"):
        ledger.open_round(aggregator, 2, genesis_cid())
    ledger.open_round(aggregator, 1, genesis_cid())
    ledger.relay(aggregator, sign_all(ledger, consortium, 1, 1, 3))
    unaccepted = update_cid("g1")
    ledger.finalize(aggregator, 1, unaccepted, [p.address for p in consortium.participants[:3]])
    with pytest.raises(TransactionReverted, match="round 1 is still finalized"):
        ledger.open_round(aggregator, 2, unaccepted)
    with pytest.raises(TransactionReverted, match="is not the federation's current aggregator"):
        ledger.open_round(consortium.outsider.account, 1, genesis_cid())


def test_failed_round_is_reopened_as_a_new_attempt(ledger: Ledger, consortium: Consortium, chain: Chain) -> None:
    aggregator = consortium.aggregator.account
    ledger.open_round(aggregator, 1, genesis_cid())
    stale = sign_all(ledger, consortium, 1, 1, 2)
    ledger.relay(aggregator, stale)
    with pytest.raises(TransactionReverted, match="cannot be failed before"):
        ledger.fail_round(consortium.outsider.account, 1)
    chain.increase_time(900)  # past the 600 s deadline, with room for block-time drift
    ledger.fail_round(consortium.outsider.account, 1)  # anyone may fail a hopeless round
    assert ledger.round(1).status == RoundStatus.FAILED

    state = ledger.open_round(aggregator, 1, genesis_cid())
    assert (state.attempt, state.commitments) == (2, 0)
    assert ledger.committed(1) == []
    with pytest.raises(TransactionReverted, match="another attempt of the round"):
        ledger.relay(aggregator, stale)
    outcome = ledger.relay(aggregator, sign_all(ledger, consortium, 1, 2, 3))
    assert len(outcome.accepted) == 3
    assert [r.participant for r in ledger.commitments(1)] == list(outcome.accepted)


def test_membership_is_governed_by_the_admin(ledger: Ledger, consortium: Consortium) -> None:
    admin = consortium.admin.account
    newcomer = consortium.outsider
    with pytest.raises(TransactionReverted, match="is not the federation's admin"):
        ledger.add_members(newcomer.account, [(newcomer.address, newcomer.x25519_public, Role.PARTICIPANT)])
    ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.PARTICIPANT)])
    member = ledger.member(newcomer.address)
    assert (member.active, member.roles, member.x25519) == (True, Role.PARTICIPANT, newcomer.x25519_public)
    with pytest.raises(TransactionReverted, match="is already a member"):
        ledger.add_members(admin, [(newcomer.address, newcomer.x25519_public, Role.PARTICIPANT)])

    removed = consortium.participants[0]
    ledger.remove_member(admin, removed.address)
    assert not ledger.member(removed.address).active
    ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    with pytest.raises(TransactionReverted, match="participant role"):
        ledger.commit(removed.account, 1, update_cid("r"), 5)
    ledger.commit(newcomer.account, 1, update_cid("n"), 5)
    assert len(ledger.members()) == 2 + len(consortium.validators) + len(consortium.participants)


def test_admin_replaces_the_aggregator(ledger: Ledger, consortium: Consortium) -> None:
    admin = consortium.admin.account
    successor = consortium.outsider
    with pytest.raises(TransactionReverted, match="lacks the aggregator role"):
        ledger.set_aggregator(admin, consortium.validators[2].address)
    ledger.add_members(admin, [(successor.address, successor.x25519_public, Role.AGGREGATOR)])
    ledger.set_aggregator(admin, successor.address)
    assert ledger.aggregator() == successor.address
    with pytest.raises(TransactionReverted, match="current aggregator"):
        ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    assert ledger.open_round(successor.account, 1, genesis_cid()).status == RoundStatus.OPEN


def test_parameters_and_attach(ledger: Ledger, chain: Chain, consortium: Consortium) -> None:
    parameters = ledger.parameters()
    assert (parameters.quorum, parameters.attestation_threshold, parameters.round_duration) == (3, 2, 600)
    assert parameters.task_hash == hashlib.sha256(b"test task").digest()
    assert ledger.admin() == consortium.admin.address
    assert Ledger.attach(chain, ledger.address).parameters() == parameters
    with pytest.raises(NotAFederation, match="no contract at"):
        Ledger.attach(chain, consortium.outsider.address)
