"""A participant that scales its update (model replacement) against the federation's rule.

Under FedAvg its update drags the model away; under a robust rule recorded on chain the
round's model stays near the honest participants' and is still accepted by validators who
re-compute the same rule from the chain's code and parameters, and `flchain verify` with a
key re-computes it exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from adversarial.cast import found_cast, trainer
from fl_chain import protocol
from fl_chain.chain.federation import RoundStatus
from fl_chain.errors import UsageError
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Ticket
from fl_chain.participant import ParticipantRole
from fl_chain.rules import AggregationRule, Clipped, FedAvg, Krum, Median, TrimmedMean
from fl_chain.task import Trained
from fl_chain.verify.audit import audit

ATTACKER = 4
FACTOR = 50.0


def accepted_model(directory: Path, rule: AggregationRule, attacked: bool) -> dict[str, np.ndarray]:
    cast = found_cast(directory, quorum=5, max_update_norm=1e6, rule=rule)
    if attacked:
        honest_train, evaluate = trainer(ATTACKER)

        def scaled(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
            trained = honest_train(base, ticket)
            return Trained({name: base[name] + FACTOR * (value - base[name]) for name, value in trained.tensors.items()},
                           trained.examples, trained.metrics)

        identity = cast.participant(ATTACKER)
        cast.roles[identity.address] = ParticipantRole(cast.federation, lambda: identity, scaled, evaluate)
    cast.coordinator(rounds=1).run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED
    keys = [OpeningKey(v.address, "validator", v.x25519_private) for v in cast.consortium.validators]
    verified = audit(cast.federation, keys)
    assert verified.findings.ok, [f.describe() for f in verified.findings.failures]
    assert any(f.check == "re-aggregation" and f.status.value == "passed" for f in verified.findings.items)
    return protocol.load_model(cast.federation.store, cast.ledger.round(1).global_model)


def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((a[name].astype(np.float64) - b[name]) ** 2) for name in a)))


def test_fedavg_follows_a_scaling_attacker(tmp_path: Path) -> None:
    clean = accepted_model(tmp_path / "clean", FedAvg(), attacked=False)
    attacked = accepted_model(tmp_path / "attacked", FedAvg(), attacked=True)
    assert distance(attacked, clean) > 5 * distance(clean, {k: np.zeros_like(v) for k, v in clean.items()})


@pytest.mark.parametrize("rule", [Median(), TrimmedMean(0.2), Krum(1), Clipped(0.0)],
                         ids=lambda rule: rule.name)
def test_a_robust_rule_on_chain_keeps_the_model_near_the_honest_one(tmp_path: Path, rule: AggregationRule) -> None:
    clean = accepted_model(tmp_path / "clean", FedAvg(), attacked=False)
    robust = accepted_model(tmp_path / "robust", rule, attacked=True)
    fedavg = accepted_model(tmp_path / "fedavg", FedAvg(), attacked=True)
    assert distance(robust, clean) < 0.2 * distance(fedavg, clean), (distance(robust, clean), distance(fedavg, clean))


def test_a_rule_deployed_with_parameters_its_guarantee_forbids_is_refused_by_every_role(tmp_path: Path) -> None:
    """A deployer writing the contract directly skips the config's check (Krum with f=2
    needs more than 6 updates a round; the quorum is 5): the rule is refused where it is
    read from the chain, before anything is aggregated under it, in one line."""
    cast = found_cast(tmp_path, quorum=5, max_update_norm=1e6, rule=Krum(2))
    with pytest.raises(UsageError, match=r"krum with f=2 needs more than 2f \+ 2 = 6 updates .* the quorum is 5"):
        cast.coordinator(rounds=1, max_attempts=1).run()
    assert cast.ledger.round(1).status != RoundStatus.ACCEPTED


@dataclasses.dataclass(frozen=True)
class FedAvgFederation(protocol.Federation):
    """A validator's view of the federation that combines with FedAvg whatever the chain says."""

    @property
    def rule(self) -> AggregationRule:
        return FedAvg()


def test_a_validator_recomputing_with_another_rule_than_the_chains_dissents_and_accepts_nothing(
        tmp_path: Path) -> None:
    """With every validator needed (threshold 3), its dissent blocks the round; its CID is
    not the model's, so under any threshold its attestation counts toward nothing."""
    cast = found_cast(tmp_path, quorum=5, threshold=3, max_update_norm=1e6, rule=Median())
    stray = cast.consortium.validators[0]
    wrong = FedAvgFederation(cast.federation.ledger, cast.federation.store)
    train, evaluate = trainer(0)
    cast.roles[stray.address] = ParticipantRole(wrong, lambda: stray, train, evaluate)
    with pytest.raises(protocol.ProtocolError):
        cast.coordinator(rounds=1, max_attempts=1).run()
    state = cast.ledger.round(1)
    assert state.status == RoundStatus.FAILED and state.dissents == 1 and state.attestations == 2
