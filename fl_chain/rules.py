"""Aggregation rules, by the code the contract records for a federation.

The aggregator, every validator and `flchain verify` look the rule up from the chain
(`FederationParameters.aggregation_rule`), never from a config, so all of them combine
the same updates into the same bytes: a federation deployed for one rule cannot be
finalized, attested or verified under another. A new rule is a class here and a code in
RULES; the code is fixed at deployment.

FedProx is not a rule: its proximal term is part of each participant's local training
(`strategy.proximal_mu`, handed to the task), and its server step is FedAvg's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.errors import UsageError


class AggregationRule(ABC):
    code: ClassVar[int]
    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def aggregate(self, updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
        """The round's global model from its valid updates: the same bytes whoever computes it."""


class FedAvg(AggregationRule):
    code = 0
    name = "fedavg"
    description = "FedAvg of the valid updates that should be included"

    def aggregate(self, updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
        return federated_average(updates)


RULES: dict[int, AggregationRule] = {rule.code: rule for rule in (FedAvg(),)}
RULE_NAMES = tuple(rule.name for rule in RULES.values())


def rule_for(code: int) -> AggregationRule:
    """The rule a federation's recorded code names."""
    if code not in RULES:
        raise UsageError(f"the federation records aggregation rule {code}, which this fl-chain does not know "
                         f"(it knows {', '.join(f'{r.code} ({r.name})' for r in RULES.values())})")
    return RULES[code]


def rule_named(name: str) -> AggregationRule:
    """The rule a config names (`strategy.rule`)."""
    for rule in RULES.values():
        if rule.name == name:
            return rule
    raise UsageError(f"unknown aggregation rule {name!r}; choose one of {RULE_NAMES}")
