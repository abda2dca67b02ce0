"""Aggregation rules come from the chain (and Flower cannot wrap the strategy that runs
them): every role looks up the code the federation
records, FedProx is a training option rather than a rule, and a code this fl-chain does
not know is refused by name instead of being aggregated some other way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from aggregator.config import compose_experiment, validate
from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import parameters_for
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import UsageError
from fl_chain.protocol import Federation
from fl_chain.rules import AggregationRule, Clipped, FedAvg, Krum, Median, MultiKrum, TrimmedMean, rule_for, rule_named
from fl_chain.storage.blockstore import LocalStore

from conftest import Consortium, genesis_cid

BASE = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}


def updates_with_one_attacker(factor: float = 50.0, honest: int = 6) -> list[WeightedUpdate]:
    """Honest updates near (1, 1, 1) and one that scales its own by `factor` and claims 10^9 examples."""
    rng = np.random.default_rng(3)
    crowd = [WeightedUpdate(f"0x{i + 1:040x}", 10 + i, {"w": (1 + rng.normal(0, 0.05, 3)).astype(np.float32),
                                                          "b": np.ones(1, np.float32)}) for i in range(honest)]
    attacker = WeightedUpdate(f"0x{99:040x}", 10**9, {"w": np.full(3, factor, np.float32), "b": np.ones(1, np.float32)})
    return [*crowd, attacker]


def test_fedavg_is_rule_zero_and_combines_as_federated_average() -> None:
    updates = [WeightedUpdate(f"0x{i:040x}", 10 * i, {"w": np.full(3, float(i), np.float32)}) for i in (1, 2)]
    assert isinstance(rule_for(0), FedAvg) and rule_named({"rule": "fedavg"}).code == 0
    assert np.array_equal(rule_for(0).aggregate(updates, BASE)["w"], federated_average(updates)["w"])


ROBUST = [Median(), TrimmedMean(0.2), Krum(1), MultiKrum(1, 3), Clipped(0.0), Clipped(2.0)]


@pytest.mark.parametrize("rule", ROBUST, ids=lambda rule: rule.description)
def test_a_robust_rule_survives_an_attacker_that_fedavg_follows(rule: AggregationRule) -> None:
    updates = updates_with_one_attacker()
    assert federated_average(updates)["w"].min() > 49  # one inflated, scaled update replaces the model
    combined = rule.aggregate(updates, BASE)
    assert np.abs(combined["w"] - 1).max() < (0.2 if rule.name != "clipped" else 1.0), combined
    again = rule.aggregate(list(reversed(updates)), BASE)  # arrival order changes no bit
    assert all(np.array_equal(combined[name], again[name]) for name in combined)


@pytest.mark.parametrize("rule", [FedAvg(), *ROBUST], ids=lambda rule: rule.description)
def test_each_rule_is_recorded_on_chain_with_its_parameters_and_read_back(rule: AggregationRule) -> None:
    back = rule_for(rule.code, rule.parameters)
    assert len(rule.parameters) == 32 and type(back) is type(rule)
    assert (back.parameters, back.description) == (rule.parameters, rule.description)


def test_rules_refuse_parameters_their_guarantee_does_not_allow() -> None:
    with pytest.raises(UsageError, match=r"krum with f=2 needs more than 2f \+ 2 = 6 updates in every round, but "
                                         r"the quorum is 5"):
        Krum(2).check(5)
    with pytest.raises(UsageError, match=r"multikrum averages m=5 updates, more than quorum - f = 4"):
        MultiKrum(1, 5).check(5)
    with pytest.raises(UsageError, match=r"0 <= strategy.beta < 0.5"):
        TrimmedMean(0.5)
    with pytest.raises(UsageError, match=r"strategy.clip_bound >= 0"):
        Clipped(-1.0)
    with pytest.raises(UsageError, match=r"krum selects one update"):
        Krum(1, 2)
    with pytest.raises(UsageError, match="quorum"):
        validate(compose_experiment(["strategy=krum", "strategy.f=1", "quorum=3"]))


def test_an_unknown_rule_or_parameters_are_refused_by_code_and_name() -> None:
    with pytest.raises(UsageError, match="aggregation rule 7, which this fl-chain does not know"):
        rule_for(7)
    with pytest.raises(UsageError, match="unknown aggregation rule strategy.rule='geomedian'"):
        rule_named({"rule": "geomedian"})
    with pytest.raises(UsageError, match="not a form this fl-chain writes"):
        rule_for(Median.code, b"\x01" + bytes(31))  # a median takes no parameters


def test_a_robust_experiment_deploys_its_rule_and_parameters() -> None:
    parameters = parameters_for(compose_experiment(["strategy=trimmed_mean", "strategy.beta=0.25"]))
    assert rule_for(parameters.aggregation_rule, parameters.rule_parameters) == TrimmedMean(0.25, outliers=3.0)


def test_fedprox_is_a_training_option_recorded_as_fedavg() -> None:
    fedprox, fedavg = compose_experiment(["strategy=fedprox"]), compose_experiment([])
    assert fedprox["strategy"]["proximal_mu"] > 0
    assert parameters_for(fedprox).aggregation_rule == parameters_for(fedavg).aggregation_rule == FedAvg.code
    assert parameters_for(fedprox).task_hash != parameters_for(fedavg).task_hash  # the proximal term is in the task


@pytest.mark.parametrize("code", [0, 7])
def test_every_role_takes_the_rule_the_federation_records(tmp_path: Path, consortium: Consortium, code: int) -> None:
    """Whatever a local config says, the rule is read from the contract's parameters."""
    embedded = EmbeddedChain.create(tmp_path / "ledger", funded=[consortium.admin.address])
    chain = embedded.connect()
    parameters = dataclasses.replace(parameters_for(compose_experiment([])), aggregation_rule=code)
    ledger = Ledger.deploy(chain, consortium.admin.account, parameters, genesis_cid())
    federation = Federation(ledger, LocalStore(tmp_path / "store"))
    if code == 0:
        assert isinstance(federation.rule, FedAvg)
    else:
        with pytest.raises(UsageError, match=f"aggregation rule {code}"):
            federation.rule  # noqa: B018 - the lookup is what is tested


def test_a_flower_privacy_wrapper_around_the_strategy_is_refused_not_run_empty() -> None:
    """Wrapped in one of Flower's differential-privacy strategies, the on-chain strategy
    would be asked for rounds it does not run: the first hook says why, instead."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    from aggregator.strategy import NOT_WRAPPABLE, OnChainStrategy

    strategy = OnChainStrategy.__new__(OnChainStrategy)  # the hooks touch no state: refused before any is needed
    wrapped = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=1.0, clipping_norm=1.0,
                                                         num_sampled_clients=3)
    with pytest.raises(UsageError, match="a Flower strategy wrapped around it"):
        wrapped.configure_train(1, ArrayRecord(), ConfigRecord(), None)  # type: ignore[arg-type]
    with pytest.raises(UsageError) as refused:
        wrapped.aggregate_train(1, [])
    assert str(refused.value) == NOT_WRAPPABLE
