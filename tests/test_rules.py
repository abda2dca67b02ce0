"""Aggregation rules come from the chain (and Flower cannot wrap the strategy that runs
them): every role looks up the code the federation
records, FedProx is a training option rather than a rule, and a code this fl-chain does
not know is refused by name instead of being aggregated some other way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from aggregator.config import compose_experiment
from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import parameters_for
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import UsageError
from fl_chain.protocol import Federation
from fl_chain.rules import RULES, FedAvg, rule_for, rule_named
from fl_chain.storage.blockstore import LocalStore

from conftest import Consortium, genesis_cid


def test_fedavg_is_rule_zero_and_combines_as_federated_average() -> None:
    updates = [WeightedUpdate(f"0x{i:040x}", 10 * i, {"w": np.full(3, float(i), np.float32)}) for i in (1, 2)]
    assert rule_for(0) is RULES[0] and isinstance(rule_for(0), FedAvg) and rule_named("fedavg").code == 0
    assert np.array_equal(rule_for(0).aggregate(updates)["w"], federated_average(updates)["w"])


def test_an_unknown_rule_is_refused_by_its_code_and_name() -> None:
    with pytest.raises(UsageError, match="aggregation rule 7, which this fl-chain does not know"):
        rule_for(7)
    with pytest.raises(UsageError, match="unknown aggregation rule 'median'"):
        rule_named("median")


def test_fedprox_is_a_training_option_recorded_as_fedavg() -> None:
    fedprox, fedavg = compose_experiment(["strategy=fedprox"]), compose_experiment([])
    assert fedprox["strategy"]["proximal_mu"] > 0
    assert parameters_for(fedprox).aggregation_rule == parameters_for(fedavg).aggregation_rule == FedAvg.code
    assert parameters_for(fedprox).task_hash != parameters_for(fedavg).task_hash  # the proximal term is in the task


@pytest.mark.parametrize("code", [0, 3])
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
