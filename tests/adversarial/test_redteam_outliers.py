"""Attacks found by a red-team review of the outlier test and the drills, each now stopped:
hostile numbers in a config, a forged summary.json (colliding names, per-round outliers),
and an honest run whose failed attempt or resume must not make verify call it forged."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adversarial.cast import Altered, Cast, found_cast, trainer
from adversarial.test_outliers import ATTACKER, RULE, BentTest, attacked_cast, verified
from fl_chain import protocol
from fl_chain.chain.federation import ExclusionReason, RoundStatus
from fl_chain.drills import parse_drills
from fl_chain.errors import UsageError
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Ticket
from fl_chain.outliers import Screening
from fl_chain.participant import ParticipantRole
from fl_chain.round import RoundCoordinator
from fl_chain.rules import rule_named
from fl_chain.storage.cid import Cid
from fl_chain.task import Trained
from fl_chain.verify.audit import audit

BIG = 10**400  # a YAML / Hydra integer literal of 401 digits


def keys(cast: Cast) -> list[OpeningKey]:
    return [OpeningKey(v.address, "validator", v.x25519_private) for v in cast.consortium.validators]


def findings(result: Any) -> set[tuple[str, str, str]]:
    return {(f.check, f.status.value, f.detail) for f in result.findings.items}


def finished_run(cast: Cast, rounds: int = 1) -> Path:
    coordinator = cast.coordinator(rounds=rounds)
    coordinator.run()
    state = cast.ledger.round(rounds)
    coordinator.runlog.write_final({}, rounds, str(state.global_model))
    return cast.directory / "run"


# ---------------------------------------------------------------- hostile config values

@pytest.mark.parametrize("strategy", [{"rule": "median", "outlier_factor": BIG}])
def test_huge_int_outlier_factor_is_a_usage_error(strategy: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        rule_named(strategy)


@pytest.mark.parametrize("entry", [{"participant": 1, "kind": "scale", "factor": BIG},
                                   {"participant": 1, "kind": "noise", "sigma": BIG},
                                   {"participant": 1, "kind": "label_flip", "rate": BIG},
                                   {"participant": 1, "kind": "alie", "z": BIG}])
def test_huge_int_attack_parameter_is_a_usage_error(entry: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        parse_drills({"drills": [entry], "num_participants": 5, "seed": 0, "rounds": 2})


# ---------------------------------------------------------------- malicious publisher

def test_verify_survives_case_colliding_outlier_keys_in_summary(tmp_path: Path) -> None:
    cast = found_cast(tmp_path, quorum=3, max_update_norm=1e6, rule=RULE)
    run = finished_run(cast)
    summary = json.loads((run / "summary.json").read_text())
    who = cast.address(1)
    summary["outliers"] = {who.lower(): [1], who.upper().replace("0X", "0x"): ["x"]}
    (run / "summary.json").write_text(json.dumps(summary))
    result = audit(cast.federation, [], run_dir=run)  # must record a finding, never raise
    assert not result.findings.ok


def test_per_round_outliers_naming_an_honest_member_are_flagged(tmp_path: Path) -> None:
    cast = attacked_cast(tmp_path)
    run = finished_run(cast)
    before = findings(audit(cast.federation, keys(cast), run_dir=run))
    summary = json.loads((run / "summary.json").read_text())
    honest = cast.address(1)
    summary["rounds"][0]["outliers"] = [honest]  # the per-round list a reader sees next to the round
    summary["rounds"][0]["exclusions"] = [{"participant": honest, "reason": "an outlier"}]
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    after = findings(audit(cast.federation, keys(cast), run_dir=run))
    assert after != before, "summary.json's per-round outliers can name an honest member unnoticed"






# ---------------------------------------------------------------- honest runs verify cleanly

def first_attempt_dissenter(cast: Cast, index: int) -> Altered:
    """A validator that dissents in attempt 1 only (then behaves)."""
    identity, honest = cast.participant(index), cast.roles[cast.address(index)]

    def attest(payload: Mapping[str, Any]) -> dict[str, Any]:
        number = int(payload["round"])
        if cast.ledger.round(number).attempt > 1:
            return honest.attest(payload)
        nonsense = Cid.parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        protocol.attest(cast.federation, identity, number, nonsense)
        return {"attestation": {}, "metrics": {}}

    return Altered(honest, attest=attest)


def test_an_outlier_of_a_failed_attempt_does_not_make_an_honest_run_fail_verify(tmp_path: Path) -> None:
    cast = found_cast(tmp_path, quorum=3, max_update_norm=1e6, rule=RULE)
    honest_train, evaluate = trainer(ATTACKER)

    def first_attempt_only(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
        trained = honest_train(base, ticket)
        if ticket.attempt > 1:
            return trained
        return Trained({n: base[n] + 50 * (v - base[n]) for n, v in trained.tensors.items()},
                       trained.examples, trained.metrics)

    identity = cast.participant(ATTACKER)
    cast.roles[identity.address] = ParticipantRole(cast.federation, lambda: identity, first_attempt_only, evaluate)
    first = min((v.address for v in cast.consortium.validators), key=lambda a: int(a, 16))
    index = next(i for i in range(5) if cast.address(i) == first)
    coordinator = cast.coordinator({first: first_attempt_dissenter(cast, index)}, rounds=1)
    coordinator.run()
    state = cast.ledger.round(1)
    assert state.status == RoundStatus.ACCEPTED and state.attempt == 2
    coordinator.runlog.write_final({}, 1, str(state.global_model))
    result = audit(cast.federation, keys(cast), run_dir=cast.directory / "run")
    bad = [f.describe() for f in result.findings.failures if f.check == "summary matches the chain"]
    assert not bad, bad


class Interrupted(Exception):
    pass


def test_a_run_resumed_after_finalize_still_verifies(tmp_path: Path) -> None:
    cast = attacked_cast(tmp_path)
    honest = cast.coordinator(rounds=1)

    def crash(number: int, point: str) -> None:
        if point == "finalized":
            raise Interrupted

    with pytest.raises(Interrupted):
        RoundCoordinator(cast.federation, honest.aggregator, honest.plan, honest.transport, honest.runlog,
                         honest.progress, checkpoint=crash).run()
    resumed = cast.coordinator(rounds=1)
    resumed.run()
    state = cast.ledger.round(1)
    assert state.status == RoundStatus.ACCEPTED
    assert cast.ledger.exclusions(1) == [(cast.address(ATTACKER), ExclusionReason.OUTLIER)]
    resumed.runlog.write_final({}, 1, str(state.global_model))
    result = audit(cast.federation, keys(cast), run_dir=cast.directory / "run")
    bad = [f.describe() for f in result.findings.failures if f.check == "summary matches the chain"]
    assert not bad, bad


# ---------------------------------------------------------------- malicious aggregator



def test_verify_with_a_key_catches_the_relabelled_outlier(tmp_path: Path) -> None:
    cast = attacked_cast(tmp_path)

    def relabel(_round: int, _unscreened: protocol.CollectedUpdates, screened: protocol.CollectedUpdates,
                screening: Screening) -> tuple[protocol.CollectedUpdates, Screening]:
        code = ExclusionReason.OUT_OF_BOUNDS
        exclusions = tuple(protocol.Exclusion(e.participant, "out of bounds, says the aggregator", code)
                           if e.code == ExclusionReason.OUTLIER else e for e in screened.exclusions)
        return protocol.CollectedUpdates(screened.updates, exclusions, screened.seen), screening

    honest = cast.coordinator(rounds=1, max_attempts=1)
    BentTest(cast.federation, honest.aggregator, honest.plan, honest.transport, honest.runlog, honest.progress,
             bend=relabel).run()
    result = verified(cast)
    assert any(f.check == "exclusion justified" and f.participant == cast.address(ATTACKER)
               for f in result.findings.failures)


class RawRule:
    """What a deployer writing the contract directly records: rule code and raw parameter words."""

    def __init__(self, code: int, factor_bits: int) -> None:
        self.code = code
        self.parameters = bytes(24) + factor_bits.to_bytes(8, "big")


