"""What a federated task is to fl-chain: a model, each participant's data, local training
and evaluation, and the figures evaluation reports.

The framework never sees a model class or a loss. It hands a task named float32 arrays
(the round's model, as `initial_weights` first named them) and gets named arrays back;
those are what is sealed, stored by CID, aggregated on chain's terms and verified. A task
owns everything between: how its data is loaded and split, what network it trains, with
which loss and optimizer, and what it measures.

A task is chosen in the config, either by a built-in name (`task=breast_cancer`) or by
Hydra's convention for any class (`task._target_=my_pkg.MyTask`, its other keys the
constructor's keyword arguments; docs/tasks.md). Before every `train` and `evaluate`
call the framework seeds Python's, NumPy's and torch's global generators from the run
seed, the participant and the round, so a task that draws from them stays reproducible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl_chain.errors import UsageError
from fl_chain.seeding import derive_seed, seeded_globals

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RunShape:
    """What a task is told about the run: the seed, how many participants share the data
    and how a built-in dataset is split among them (the config's `partition` group)."""

    seed: int
    num_participants: int
    partition: Mapping[str, Any] = field(default_factory=dict)
    rounds: int = 1


@dataclass(frozen=True)
class Trained:
    """A task's local training result: the new weights, the examples they were trained on
    (the update's FedAvg weight, capped on chain) and the task's own figures (e.g. loss)."""

    tensors: dict[str, np.ndarray]
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluated:
    """A model's figures on `examples` test examples, by the names in `Task.metrics`."""

    metrics: dict[str, float]
    examples: int

    @classmethod
    def weighted_mean(cls, scores: Sequence[Evaluated]) -> Evaluated:
        """The example-weighted mean of each figure over the scores that report it: the
        federation's from per-site ones (as fl_chain.messages.weighted_metrics sums signed ones)."""
        total = sum(score.examples for score in scores)
        if total == 0:
            raise UsageError("no test examples to evaluate on")
        names = sorted({name for score in scores for name in score.metrics})
        means = {}
        for name in names:
            reporting = [score for score in scores if name in score.metrics]
            means[name] = sum(s.metrics[name] * s.examples for s in reporting) / sum(s.examples for s in reporting)
        return cls(means, total)


class Task(ABC):
    """A model and its participants' data. `metrics` names what `evaluate` reports, loss
    first; the next (or loss alone) is the figure a run is summed up by. `data` is whatever
    the task's own loaders return: the framework only passes it back."""

    metrics: tuple[str, ...] = ("loss", "accuracy")

    @property
    def headline(self) -> str:
        """The figure a run's progress and summary lead with (accuracy, mse, ...)."""
        return self.metrics[1] if len(self.metrics) > 1 else self.metrics[0]

    @abstractmethod
    def initial_weights(self, run: RunShape) -> dict[str, np.ndarray]:
        """The round-zero model, drawn from `run.seed`: the same bytes every time."""

    @abstractmethod
    def participant_data(self, index: int, run: RunShape) -> Any:
        """Participant `index`'s train and test data in a simulation."""

    @abstractmethod
    def pooled_data(self, run: RunShape) -> Any:
        """Every participant's data in one place, for the centralized baseline."""

    @abstractmethod
    def train_examples(self, data: Any) -> int:
        """How many examples `data` trains on: the most its updates may claim."""

    @abstractmethod
    def train(self, weights: Weights, data: Any, *, seed: int) -> Trained:
        """One round of local training, starting from `weights`."""

    @abstractmethod
    def evaluate(self, weights: Weights, data: Any) -> Evaluated:
        """`weights` scored on `data`'s test split, by the names in `metrics`."""

    def plot_data(self, run: RunShape, path: Path) -> bool:
        """Draws how the data is spread over participants into `path`, if the task can."""
        return False


def train_seeded(task: Task, weights: Weights, data: Any, seed: int) -> Trained:
    """`task.train`, with the global generators seeded first (and restored after)."""
    with seeded_globals(seed):
        return task.train(weights, data, seed=seed)


def train_as(task: Task, weights: Weights, data: Any, *, run_seed: int, round_number: int, index: int) -> Trained:
    """Participant `index`'s training in `round_number` of a run seeded `run_seed`, with the
    seed it always trains with (so a drill that re-trains it gets the same bytes)."""
    return train_seeded(task, weights, data, derive_seed(run_seed, round_number, index))


def evaluate_seeded(task: Task, weights: Weights, data: Any, seed: int) -> Evaluated:
    """`task.evaluate`, with the global generators seeded first (and restored after)."""
    with seeded_globals(seed):
        return task.evaluate(weights, data)


def named_code(task: object) -> dict[str, str]:
    """The code a task config names for import, by the override that names it: a class
    (`task._target_`), a Flower module (`task.module`) or a model (`task.model`, whatever
    form it takes: any model but none is code). Whoever did not write the config imports
    these only when they name them themselves."""
    if not isinstance(task, Mapping):
        return {}
    named = {}
    if "_target_" in task:
        named["task._target_"] = str(task["_target_"])
    if task.get("name") == "flower" and "module" in task:
        named["task.module"] = str(task["module"])
    model = task.get("model")
    if model is not None:
        named["task.model._target_"] = str(model.get("_target_") if isinstance(model, Mapping) else model)
    return named
