"""A malicious aggregator can stall a round, never censor, frame or mis-aggregate unseen.

Each test runs the real coordinator with one step replaced by what a dishonest aggregator
would do (a subclass or a wrapped protocol step: its own strategy), against honest
participants and validators: the validators dissent, the contract refuses, or a
participant commits itself, and `verify` names what happened.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from adversarial.cast import Cast, found_cast, local_data
from clients.node import _agreed_preprocessing
from fl_chain import protocol
from fl_chain.aggregation import WeightedUpdate
from fl_chain.chain.federation import ExclusionReason, RoundStatus
from fl_chain.data.normalization import FeatureStatistics
from fl_chain.data.preprocessing import SignedSummary, TableSummary
from fl_chain.errors import UsageError
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Evaluation, Ticket, sign_text
from fl_chain.participant import watch_in_thread
from fl_chain.protocol import CollectedUpdates, Exclusion, ProtocolError
from fl_chain.settings import RunSettings
from fl_chain.verify.audit import audit
from fl_chain.verify.render import text_report

VICTIM = 2


def keys(cast: Cast) -> list[OpeningKey]:
    return [OpeningKey(v.address, "validator", v.x25519_private) for v in cast.consortium.validators]


def with_collect(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """The aggregator's own verdict on what it collected: the honest one, then `change`."""
    honest = protocol.collect
    monkeypatch.setattr(protocol, "collect", lambda *args, **kwargs: change(honest(*args, **kwargs)))


def excluding(victim: str, reason: ExclusionReason, claim: str) -> Any:
    """A verdict change that drops `victim`'s update and blames it on `reason`."""
    def change(collected: CollectedUpdates) -> CollectedUpdates:
        kept = tuple(update for update in collected.updates if update.sender != victim)
        return CollectedUpdates(kept, (*collected.exclusions, Exclusion(victim, claim, reason)), collected.seen)
    return change


def test_a_valid_update_excluded_under_a_false_reason_is_dissented_and_never_accepted(
        cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = cast.address(VICTIM)
    with_collect(monkeypatch, excluding(victim, ExclusionReason.WRONG_SHAPE, "the aggregator says it had the wrong shape"))
    with pytest.raises(ProtocolError, match="round 1 failed 2 attempts in a row"):
        cast.coordinator(max_attempts=2).run()
    assert cast.ledger.round(1).status == RoundStatus.FAILED and cast.ledger.latest_accepted()[0] == 0
    assert "dissent from the finalized model" in cast.said
    assert f"disputes: {victim} was excluded (wrong shape) but its update is valid" in cast.said  # each says why
    keyless = audit(cast.federation, [])
    report = text_report(keyless)
    assert "WARNING: 2 exclusion(s) could not be re-judged" in report
    assert all(v.address in report for v in cast.consortium.validators)  # who could re-judge them
    keyed = audit(cast.federation, keys(cast)[:1])
    assert not keyed.findings.ok
    assert any(f.check == "exclusion justified" and f.participant == victim and
               "excluded a valid update" in f.detail for f in keyed.findings.failures)


def test_an_invalid_update_included_or_a_model_that_is_not_the_aggregate_is_dissented(
        cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    def poison(collected: CollectedUpdates) -> CollectedUpdates:
        first, *rest = collected.updates
        boosted = WeightedUpdate(first.sender, first.examples, {k: v * 1000 for k, v in first.tensors.items()})
        return dataclasses.replace(collected, updates=(boosted, *rest))

    with_collect(monkeypatch, poison)  # the aggregate of something nobody sent
    with pytest.raises(ProtocolError, match="failed 1 attempts in a row"):
        cast.coordinator(max_attempts=1).run()
    state = cast.ledger.round(1)
    assert state.status == RoundStatus.FAILED
    result = audit(cast.federation, keys(cast)[:1])
    assert any(f.check == "re-aggregation" for f in result.findings.failures)


def test_an_unrelayed_receipt_is_committed_by_its_participant_and_must_be_accounted_for(tmp_path: Any,
                                                                                        monkeypatch: Any) -> None:
    cast = found_cast(tmp_path, commit_grace=4)
    victim = cast.address(VICTIM)
    for address, role in cast.roles.items():  # every participant keeps an eye on its own commitment
        identity = next(p for p in cast.consortium.participants if p.address == address)
        role.watch = watch_in_thread(cast.federation, lambda identity=identity: identity)
    honest_relay = protocol.relay
    monkeypatch.setattr(protocol, "relay", lambda federation, relayer, receipts: honest_relay(
        federation, relayer, [r for r in receipts if r.commitment.participant != victim]))
    coordinator = cast.coordinator()
    coordinator.plan = dataclasses.replace(coordinator.plan, fast_forward=False)  # real seconds: watchers run
    coordinator.run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED
    assert cast.ledger.round(1).included == 5  # the swallowed receipt is in: its participant sent it itself
    [direct] = [r for r in cast.ledger.commitments(1) if r.participant == victim]
    sender = cast.embedded.web3.eth.get_transaction(direct.transaction)["from"]
    assert sender == victim  # on chain, the participant's own transaction: the censorship attempt is visible


def test_participants_refuse_to_evaluate_or_train_on_what_the_chain_does_not_say(cast: Cast) -> None:
    cast.coordinator().run()
    role = cast.roles[cast.address(0)]
    finalized = cast.ledger.round(1).global_model
    genesis = cast.ledger.round(1).base
    with pytest.raises(ProtocolError, match="but round 1 finalized"):
        role.evaluate({"round": 1, "model": str(genesis)})
    state = protocol.open_round(cast.federation, cast.consortium.aggregator, 2)
    with pytest.raises(ProtocolError, match="but the chain says it starts from"):
        role.train(Ticket(2, state.attempt, genesis, state.deadline).to_record())
    assert finalized is not None


def test_an_evaluation_cannot_be_put_in_a_participants_mouth(cast: Cast) -> None:
    cast.coordinator().run()
    line = json.loads((cast.directory / "run" / "evaluations.jsonl").read_text().splitlines()[0])
    forged = {**line, "metrics": json.dumps({"accuracy": 0.999, "loss": 0.001})}
    from fl_chain.messages import MalformedMessage

    with pytest.raises(MalformedMessage, match="is not signed by"):
        Evaluation.from_record(forged, federation=cast.federation.address, chain_id=cast.federation.chain_id)
    honest = Evaluation.from_record({**line, "metrics": json.dumps(line["metrics"])},
                                    federation=cast.federation.address, chain_id=cast.federation.chain_id)
    assert honest.participant == line["participant"] and np.isfinite(honest.metrics["accuracy"])


def summaries(cast: Cast) -> dict[str, SignedSummary]:
    signed = {}
    for index, participant in enumerate(cast.consortium.participants):
        x, _ = local_data(index)
        summary = TableSummary(("a", "b", "c"), (0, 1), FeatureStatistics.of(x.astype(np.float32)))
        signed[participant.address] = SignedSummary.sign(participant.account, cast.federation.address,
                                                         cast.federation.chain_id, summary)
    return signed


def settings_with(records: dict[str, dict[str, str]]) -> RunSettings:
    return RunSettings(experiment={}, chain_url="", contract="", store={}, summaries=records)


def test_sites_combine_only_the_sites_own_signed_summaries(cast: Cast) -> None:
    signed = summaries(cast)
    me = cast.address(0)
    own = signed[me].summary
    honest = {address: item.to_record() for address, item in signed.items()}
    shared = _agreed_preprocessing(cast.federation, settings_with(honest), me, lambda: own)
    assert shared.to_dict() == SignedSummary.combine(signed).to_dict()
    other = cast.address(1)
    forged = {**honest, other: {**honest[other], "summary": signed[cast.address(2)].text}}
    with pytest.raises(ProtocolError, match=f"not signed by {other}"):
        _agreed_preprocessing(cast.federation, settings_with(forged), me, lambda: own)
    missing = {address: record for address, record in honest.items() if address != other}
    with pytest.raises(ProtocolError, match="not of the federation's participants"):
        _agreed_preprocessing(cast.federation, settings_with(missing), me, lambda: own)
    mine_altered = {**honest, me: signed[cast.address(3)].to_record()}
    with pytest.raises(ProtocolError, match="not signed by|altered"):
        _agreed_preprocessing(cast.federation, settings_with(mine_altered), me, lambda: own)


@pytest.mark.parametrize("poison", [
    pytest.param({"total": [float("nan"), 1.0, 1.0]}, id="a NaN total"),
    pytest.param({"count": [1e15, 20.0, 20.0]}, id="a count of 1e15"),
    pytest.param({"total_squares": [-1.0, 1.0, 1.0]}, id="a negative sum of squares"),
    pytest.param({"labels": list(range(5000))}, id="5000 classes"),
])
def test_a_site_summary_no_table_has_is_refused_by_every_site(cast: Cast, poison: dict[str, Any]) -> None:
    honest = summaries(cast)
    attacker = cast.participant(4)
    document = {**json.loads(honest[attacker.address].text), **poison}
    text = json.dumps(document)  # the attacker signs its poison: a signature proves who, not that it is sane
    signature = sign_text(attacker.account, SignedSummary.statement(cast.federation.address,
                                                                    cast.federation.chain_id, text))
    record = {"summary": text, "signature": signature.hex()}
    records = {address: item.to_record() for address, item in honest.items()} | {attacker.address: record}
    me = cast.address(0)
    with pytest.raises(ProtocolError, match="no table has"):
        _agreed_preprocessing(cast.federation, settings_with(records), me, lambda: honest[me].summary)


def test_what_verify_cannot_judge_of_an_exclusion_is_a_warning_never_a_pass(
        cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    """An aggregator that calls a valid update unavailable, then withholds the blob: nothing
    after the fact can tell, so verify says so (with every key) instead of passing it."""
    victim = cast.address(VICTIM)
    with_collect(monkeypatch, excluding(victim, ExclusionReason.UNAVAILABLE, "the aggregator says it could not fetch it"))
    cast.coordinator().run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED  # validators cannot judge when a blob appeared
    [record] = [r for r in cast.ledger.commitments(1) if r.participant == victim]
    cast.federation.store.block_path(record.cid).unlink()  # withheld from the published store
    for given in ([], keys(cast)):
        result = audit(cast.federation, given)
        [judged] = [f for f in result.findings.items if f.check == "exclusion justified"]
        assert judged.status.value == "unchecked"
        assert "WARNING: 1 exclusion(s) could not be re-judged" in text_report(result)


def test_a_site_summary_counting_more_rows_than_its_cap_is_refused(cast: Cast) -> None:
    honest = summaries(cast)
    attacker = cast.participant(4)
    cap = cast.ledger.member(attacker.address).example_cap
    x = np.random.default_rng(0).normal(1e3, 1e4, size=(cap + 1, 3)).astype(np.float32)
    bloated = SignedSummary.sign(attacker.account, cast.federation.address, cast.federation.chain_id,
                                 TableSummary(("a", "b", "c"), (0, 1), FeatureStatistics.of(x)))
    records = {address: item.to_record() for address, item in honest.items()} | {attacker.address: bloated.to_record()}
    me = cast.address(0)
    with pytest.raises(ProtocolError, match=f"counts {cap + 1} rows, above the {cap} examples it was admitted with"):
        _agreed_preprocessing(cast.federation, settings_with(records), me, lambda: honest[me].summary)


def test_a_deployed_site_imports_task_code_only_when_its_node_config_names_it() -> None:
    """The aggregator sends settings whose task names a model class: the task hash proves only
    that the deployer chose it, so a site imports it only if its own node config names it."""
    from clients.node import _check_task_code

    task = {"name": "csv", "model": {"_target_": "their_pkg.Net"}}
    with pytest.raises(UsageError, match='task-code="their_pkg.Net"'):
        _check_task_code(task, {})
    with pytest.raises(UsageError, match="their_pkg.Net"):
        _check_task_code(task, {"task-code": "my_pkg.Net"})
    _check_task_code(task, {"task-code": "my_pkg.Net, their_pkg.Net"})
    _check_task_code({"name": "csv", "model": None}, {})
