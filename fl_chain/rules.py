"""Aggregation rules, by the code and parameters the contract records for a federation.

The aggregator, every validator and `flchain verify` build the rule from the chain
(`FederationParameters.aggregation_rule` and `rule_parameters`), never from a config, so
all of them combine the same updates into the same bytes: a federation deployed for one
rule cannot be finalized, attested or verified under another. A new rule is a class here
and an entry in RULES; its code and parameters are fixed at deployment.

Every rule is deterministic: updates are taken in address order, sums run in float64 in a
fixed order, and ties are broken by address, so equal inputs give equal bytes on every
machine. The robust rules ignore example counts (no update buys influence by claiming
more); FedAvg and norm-bounded averaging weigh by them, within each member's cap.

FedProx is not a rule: its proximal term is part of each participant's local training
(`strategy.proximal_mu`, handed to the task), and its server step is FedAvg's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from fl_chain.aggregation import WeightedUpdate, federated_average, flattened, in_address_order
from fl_chain.errors import AggregationError, UsageError
from fl_chain.floatbits import bits_float, finite, float_bits

Tensors = Mapping[str, np.ndarray]
WORDS = 4  # the contract's bytes32 of rule parameters: four big-endian 64-bit words
OUTLIER_WORD = WORDS - 1  # the last word is the outlier test's factor (fl_chain/outliers.py); the rule has the rest
MAX_OUTLIER_FACTOR = 1e6


@dataclass(frozen=True)
class AggregationRule(ABC):
    """A rule, and the factor of the outlier test run before it (0: none): an update
    farther from the round's coordinate-wise median than `outliers` times the median
    such distance is excluded on chain as an outlier (fl_chain/outliers.py)."""

    outliers: float = field(default=0.0, kw_only=True)
    code: ClassVar[int]
    name: ClassVar[str]
    paper: ClassVar[str]

    def __post_init__(self) -> None:
        factor = finite(self.outliers)
        if not (factor is not None and math.copysign(1.0, factor) > 0
                and (factor == 0 or 1 <= factor <= MAX_OUTLIER_FACTOR)):
            raise UsageError(f"strategy.outlier_factor must be 0 (no outlier test) or in [1, {MAX_OUTLIER_FACTOR:g}] "
                             f"(a multiple of the round's median distance to its centre), got {self.outliers!r}")

    @property
    def description(self) -> str:
        """The rule, its parameters and its outlier test, in words (reports and verify's findings)."""
        if not self.outliers:
            return self.summary
        return (f"{self.summary}, after excluding as outliers updates farther than {self.outliers:g}x the median "
                "distance from the coordinate-wise median")

    @property
    @abstractmethod
    def summary(self) -> str:
        """The rule and its own parameters, in words."""

    @abstractmethod
    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        """The round's global model from its valid updates and the round's base model."""

    def words(self) -> tuple[int, ...]:
        """The parameters as the contract stores them (unsigned 64-bit words)."""
        return ()

    @classmethod
    def from_words(cls, words: tuple[int, ...]) -> AggregationRule:
        """The rule its recorded words describe (checked as a config's would be)."""
        return cls()

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any]) -> AggregationRule:
        return cls()

    def with_outliers(self, factor: float) -> AggregationRule:
        return replace(self, outliers=factor)

    def check(self, quorum: int) -> None:  # noqa: B027 - most rules hold for any quorum
        """Refuses parameters the rule's guarantee does not allow when every finalized
        round has at least `quorum` valid updates."""

    @property
    def parameters(self) -> bytes:
        words = (*self.words(), *[0] * (OUTLIER_WORD - len(self.words())), float_bits(float(self.outliers)))
        return b"".join(word.to_bytes(8, "big") for word in words)


class FedAvg(AggregationRule):
    code = 0
    name = "fedavg"
    paper = "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data"
    summary = "FedAvg of the valid updates that should be included"

    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        return federated_average(updates)


class Median(AggregationRule):
    code = 2
    name = "median"
    paper = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    summary = "coordinate-wise median of the valid updates"

    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        return _per_coordinate(updates, lambda stacked: np.median(stacked, axis=0))


@dataclass(frozen=True)
class TrimmedMean(AggregationRule):
    """Per coordinate, the mean after dropping the `beta` share of highest and of lowest values."""

    beta: float
    code: ClassVar[int] = 3
    name: ClassVar[str] = "trimmed_mean"
    paper: ClassVar[str] = Median.paper

    def __post_init__(self) -> None:
        super().__post_init__()
        beta = finite(self.beta)
        if not (beta is not None and 0 <= beta < 0.5):
            raise UsageError(f"trimmed_mean needs 0 <= strategy.beta < 0.5 (the share trimmed at each end), "
                             f"got {self.beta!r}")

    @property
    def summary(self) -> str:
        return f"coordinate-wise mean of the valid updates, trimming {self.beta:g} at each end"

    def words(self) -> tuple[int, ...]:
        return (float_bits(self.beta),)

    @classmethod
    def from_words(cls, words: tuple[int, ...]) -> TrimmedMean:
        return cls(bits_float(words[0]))

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any]) -> TrimmedMean:
        return cls(strategy.get("beta", 0.1))

    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        trimmed = math.floor(self.beta * len(updates))

        def mean(stacked: np.ndarray) -> np.ndarray:
            kept = np.sort(stacked, axis=0)[trimmed: len(stacked) - trimmed]
            return _ordered_sum(kept) / len(kept)

        return _per_coordinate(updates, mean)


@dataclass(frozen=True)
class MultiKrum(AggregationRule):
    """The mean of the `m` updates closest to their n - f - 2 nearest neighbours (Krum: m = 1)."""

    f: int
    m: int = 1
    code: ClassVar[int] = 5
    name: ClassVar[str] = "multikrum"
    paper: ClassVar[str] = ("Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant "
                            "Gradient Descent")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("f", "m"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "f" else 1):
                raise UsageError(f"{self.name} needs an integer strategy.{key} >= {0 if key == 'f' else 1}, "
                                 f"got {value!r}")

    @property
    def summary(self) -> str:
        return f"{self.name} of the valid updates (f={self.f}, m={self.m})"

    def words(self) -> tuple[int, ...]:
        return (self.f, self.m)

    @classmethod
    def from_words(cls, words: tuple[int, ...]) -> MultiKrum:
        return cls(words[0], words[1])

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any]) -> MultiKrum:
        return cls(strategy.get("f", 1), strategy.get("m", 1))

    def check(self, quorum: int) -> None:
        if quorum <= 2 * self.f + 2:
            raise UsageError(f"{self.name} with f={self.f} needs more than 2f + 2 = {2 * self.f + 2} updates in "
                             f"every round, but the quorum is {quorum}: raise quorum or lower strategy.f")
        if self.m > quorum - self.f:
            raise UsageError(f"{self.name} averages m={self.m} updates, more than quorum - f = {quorum - self.f}")

    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        ordered = in_address_order(updates)
        n = len(ordered)
        if n <= 2 * self.f + 2 or self.m > n - self.f:
            raise AggregationError(f"{self.name} with f={self.f}, m={self.m} cannot combine {n} updates")
        flat = [flattened(update.tensors) for update in ordered]
        distances = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                difference = flat[i] - flat[j]
                distances[i, j] = distances[j, i] = float(np.dot(difference, difference))
        neighbours = n - self.f - 2
        scores = [sum(sorted(np.delete(distances[i], i))[:neighbours]) for i in range(n)]
        chosen = sorted(range(n), key=lambda i: (scores[i], i))[: self.m]
        return _per_coordinate([ordered[i] for i in sorted(chosen)],
                               lambda stacked: _ordered_sum(stacked) / len(stacked))


class Krum(MultiKrum):
    code: ClassVar[int] = 4
    name: ClassVar[str] = "krum"

    def __init__(self, f: int, m: int = 1, *, outliers: float = 0.0) -> None:
        if m != 1:
            raise UsageError(f"krum selects one update (m=1); for m={m} use strategy=multikrum")
        super().__init__(f, 1, outliers=outliers)

    @classmethod
    def from_words(cls, words: tuple[int, ...]) -> Krum:
        return cls(words[0], words[1] or 1)

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any]) -> Krum:
        return cls(strategy.get("f", 1))


@dataclass(frozen=True)
class Clipped(AggregationRule):
    """FedAvg of the updates, each first pulled back to within `bound` (L2) of the base
    model; `bound` 0 means the median of the round's distances."""

    bound: float
    code: ClassVar[int] = 6
    name: ClassVar[str] = "clipped"
    paper: ClassVar[str] = "Sun et al. 2019, Can You Really Backdoor Federated Learning?"

    def __post_init__(self) -> None:
        super().__post_init__()
        bound = finite(self.bound)
        if not (bound is not None and bound >= 0):
            raise UsageError(f"clipped needs strategy.clip_bound >= 0 (0: the median of the round's update "
                             f"norms), got {self.bound!r}")

    @property
    def summary(self) -> str:
        bound = f"{self.bound:g}" if self.bound else "the median of the round's norms"
        return f"FedAvg of the valid updates, each clipped to {bound} from the base model"

    def words(self) -> tuple[int, ...]:
        return (float_bits(self.bound),)

    @classmethod
    def from_words(cls, words: tuple[int, ...]) -> Clipped:
        return cls(bits_float(words[0]))

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any]) -> Clipped:
        return cls(strategy.get("clip_bound", 0.0))

    def aggregate(self, updates: Sequence[WeightedUpdate], base: Tensors) -> dict[str, np.ndarray]:
        ordered = in_address_order(updates)
        reference = flattened(base)
        norms = [float(np.linalg.norm(flattened(update.tensors) - reference)) for update in ordered]
        bound = self.bound or float(np.median(norms))
        clipped = []
        for update, norm in zip(ordered, norms, strict=True):
            scale = 1.0 if norm <= bound or norm == 0 else bound / norm
            tensors = {name: (np.asarray(base[name], np.float64) + scale * (np.asarray(value, np.float64)
                                                                             - np.asarray(base[name], np.float64))
                              ).astype(np.asarray(value).dtype) for name, value in update.tensors.items()}
            clipped.append(WeightedUpdate(update.sender, update.examples, tensors))
        return federated_average(clipped)


RULE_CLASSES: tuple[type[AggregationRule], ...] = (FedAvg, Median, TrimmedMean, Krum, MultiKrum, Clipped)
RULES: dict[int, type[AggregationRule]] = {rule.code: rule for rule in RULE_CLASSES}
RULE_NAMES = tuple(rule.name for rule in RULE_CLASSES)


def rule_for(code: int, parameters: bytes = bytes(8 * WORDS)) -> AggregationRule:
    """The rule a federation's recorded code and parameters name."""
    if code not in RULES:
        raise UsageError(f"the federation records aggregation rule {code}, which this fl-chain does not know "
                         f"(it knows {', '.join(f'{r.code} ({r.name})' for r in RULE_CLASSES)})")
    words = tuple(int.from_bytes(parameters[i: i + 8], "big") for i in range(0, 8 * WORDS, 8))
    rule = RULES[code].from_words(words[:OUTLIER_WORD]).with_outliers(bits_float(words[OUTLIER_WORD]))
    if rule.parameters != bytes(parameters):
        raise UsageError(f"the federation records parameters 0x{bytes(parameters).hex()} for rule {rule.name}, "
                         "which are not a form this fl-chain writes")
    return rule


def rule_named(strategy: Mapping[str, Any]) -> AggregationRule:
    """The rule a config's strategy group names (`strategy.rule` and its parameters)."""
    name = strategy.get("rule", "fedavg")
    for rule in RULE_CLASSES:
        if rule.name == name:
            return rule.from_config(strategy).with_outliers(strategy.get("outlier_factor", 0.0))
    raise UsageError(f"unknown aggregation rule strategy.rule={name!r}; choose one of {RULE_NAMES}")


def _per_coordinate(updates: Sequence[WeightedUpdate], combine: Any) -> dict[str, np.ndarray]:
    """`combine` over each tensor's updates stacked in address order (float64), cast back."""
    ordered = in_address_order(updates)
    if not ordered:
        raise AggregationError("no updates to combine")
    result = {}
    for name, value in ordered[0].tensors.items():
        stacked = np.stack([np.asarray(update.tensors[name], np.float64) for update in ordered])
        combined = combine(stacked)
        result[name] = (np.rint(combined) if np.asarray(value).dtype.kind in "iu" else combined).astype(
            np.asarray(value).dtype)
    return result


def _ordered_sum(stacked: np.ndarray) -> np.ndarray:
    """Row by row, in order: the same float64 bits on every machine."""
    total = stacked[0].copy()
    for row in stacked[1:]:
        total += row
    return total

