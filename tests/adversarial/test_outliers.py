"""The outlier test: a scaling participant is excluded on chain with the outlier reason,
and an aggregator that bends the test either way is dissented from by the validators and
caught by `flchain verify` with a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adversarial.cast import Cast, found_cast, trainer
from fl_chain import protocol
from fl_chain.aggregation import WeightedUpdate
from fl_chain.chain.federation import ExclusionReason, RoundStatus
from fl_chain.commands.status import FederationStatus
from fl_chain.errors import UsageError
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Ticket
from fl_chain.outliers import Screening, screen
from fl_chain.participant import ParticipantRole
from fl_chain.round import RoundCoordinator
from fl_chain.rules import Median, TrimmedMean, rule_for, rule_named
from fl_chain.task import Trained
from fl_chain.verify.audit import Audit, audit

ATTACKER = 4
RULE = Median(outliers=3.0)


def attacked_cast(directory: Path) -> Cast:
    """Five participants (quorum 3), the last scaling its update by 50."""
    cast = found_cast(directory, quorum=3, max_update_norm=1e6, rule=RULE)
    honest_train, evaluate = trainer(ATTACKER)

    def scaled(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
        trained = honest_train(base, ticket)
        return Trained({name: base[name] + 50 * (value - base[name]) for name, value in trained.tensors.items()},
                       trained.examples, trained.metrics)

    identity = cast.participant(ATTACKER)
    cast.roles[identity.address] = ParticipantRole(cast.federation, lambda: identity, scaled, evaluate)
    return cast


def verified(cast: Cast) -> Audit:
    return audit(cast.federation, [OpeningKey(v.address, "validator", v.x25519_private)
                                   for v in cast.consortium.validators])


def exclusion_checks(result: Audit, participant: str) -> list[str]:
    return [f.status.value for f in result.findings.items
            if f.check == "exclusion justified" and f.participant == participant]


def test_a_scaling_attacker_is_excluded_as_an_outlier_on_chain_and_verify_agrees(tmp_path: Path) -> None:
    cast = attacked_cast(tmp_path)
    coordinator = cast.coordinator(rounds=2)
    coordinator.run()
    attacker = cast.participant(ATTACKER).address
    for number in (1, 2):
        assert cast.ledger.round(number).status == RoundStatus.ACCEPTED
        assert cast.ledger.exclusions(number) == [(attacker, ExclusionReason.OUTLIER)]
        assert coordinator.runlog.rounds[number - 1].outliers == [attacker]
    result = verified(cast)
    assert result.findings.ok, [f.describe() for f in result.findings.failures]
    assert exclusion_checks(result, attacker) == ["passed", "passed"]
    status = FederationStatus.read(cast.ledger)
    assert status.outliers() == {attacker: [1, 2]}
    assert status.to_json()["rounds"][0]["excluded"] == [{"participant": attacker, "reason": "outlier"}]
    assert f"{attacker}: an outlier in 2 of 2 rounds (1, 2)" in status.render()


def test_honest_rounds_exclude_nobody(tmp_path: Path) -> None:
    cast = found_cast(tmp_path, quorum=3, max_update_norm=1e6, rule=RULE)
    cast.coordinator(rounds=2).run()
    assert cast.ledger.exclusions(1) == cast.ledger.exclusions(2) == []


class BentTest(RoundCoordinator):
    """An aggregator that has its own way with the outlier test's verdict."""

    def __init__(self, *args: Any, bend: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bend = bend

    def screen(self, round_number: int, collected: protocol.CollectedUpdates,
               base: protocol.Tensors) -> tuple[protocol.CollectedUpdates, Screening]:
        return self.bend(round_number, collected, *super().screen(round_number, collected, base))


def bent(cast: Cast, bend: Any) -> BentTest:
    honest = cast.coordinator(rounds=1, max_attempts=1)
    return BentTest(cast.federation, honest.aggregator, honest.plan, honest.transport, honest.runlog, honest.progress,
                    bend=bend)


def run_bent(cast: Cast, bend: Any) -> None:
    with pytest.raises(protocol.ProtocolError):
        bent(cast, bend).run()
    state = cast.ledger.round(1)
    assert state.status != RoundStatus.ACCEPTED and state.dissents >= 2, state


def test_an_aggregator_that_keeps_the_outlier_in_is_dissented_from(tmp_path: Path) -> None:
    cast = attacked_cast(tmp_path)
    run_bent(cast, lambda _round, unscreened, _screened, screening: (unscreened, screening))
    result = verified(cast)
    assert any(f.check == "outliers excluded" and f.participant == cast.participant(ATTACKER).address
               for f in result.findings.failures)


def test_an_aggregator_that_calls_an_honest_update_an_outlier_is_dissented_from(tmp_path: Path) -> None:
    cast = found_cast(tmp_path, quorum=3, max_update_norm=1e6, rule=RULE)
    victim = cast.participant(1).address

    def frame(round_number: int, _unscreened: protocol.CollectedUpdates, screened: protocol.CollectedUpdates,
              screening: Screening) -> tuple[protocol.CollectedUpdates, Screening]:
        kept = tuple(u for u in screened.updates if u.sender != victim)
        framed = protocol.Exclusion(victim, "an outlier, says the aggregator", ExclusionReason.OUTLIER)
        return protocol.CollectedUpdates(kept, (*screened.exclusions, framed), screened.seen), screening

    run_bent(cast, frame)
    assert cast.ledger.exclusions(1) == [(victim, ExclusionReason.OUTLIER)]
    assert exclusion_checks(verified(cast), victim) == ["failed"]


# ---------------------------------------------------------------- the test itself


def updates(*steps: float) -> list[WeightedUpdate]:
    return [WeightedUpdate("0x" + f"{i + 1:040x}", 10, {"w": np.full(4, step, np.float32)})
            for i, step in enumerate(steps)]


BASE = {"w": np.zeros(4, np.float32)}


def test_the_test_flags_the_far_update_and_scores_every_one() -> None:
    screening = screen(updates(1.0, 1.1, 0.9, 1.05, 50.0), BASE, 3.0, keep=3)
    assert [u.sender[-1] for u in screening.outliers] == ["5"]
    assert [s.outlier for s in screening.scores] == [False, False, False, False, True]
    assert screening.score_of(updates(0)[0].sender).cosine == pytest.approx(1.0)
    assert screening.score_of("0x" + f"{5:040x}").norm == pytest.approx(100.0)


def test_the_test_never_leaves_fewer_than_the_quorum_and_drops_the_farthest_first() -> None:
    screening = screen(updates(1.0, 1.0, 1.0, 30.0, 60.0), BASE, 3.0, keep=4)
    assert [u.sender[-1] for u in screening.outliers] == ["5"]
    assert len(screening.kept) == 4


def test_the_verdict_does_not_depend_on_arrival_order_and_a_zero_factor_flags_nobody() -> None:
    given = updates(1.0, -1.0, 0.5, 20.0, 0.8)
    assert screen(given, BASE, 3.0, 3) == screen(list(reversed(given)), BASE, 3.0, 3)
    assert screen(given, BASE, 0.0, 3).outliers == ()


def test_the_factor_is_recorded_with_the_rule_and_bad_factors_are_refused() -> None:
    rule = TrimmedMean(0.2, outliers=2.5)
    assert rule_for(rule.code, rule.parameters) == rule
    assert rule_for(Median.code, Median().parameters).outliers == 0
    for bad in (0.5, -1.0, -0.0, float("nan"), float("inf"), "3", True):
        with pytest.raises(UsageError, match="strategy.outlier_factor must be 0"):
            rule_named({"rule": "median", "outlier_factor": bad})
    negative_zero = replace(Median(), outliers=0.0).parameters[:24] + (1 << 63).to_bytes(8, "big")
    with pytest.raises(UsageError, match="outlier_factor"):
        rule_for(Median.code, negative_zero)
