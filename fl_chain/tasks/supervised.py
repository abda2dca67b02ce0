"""Supervised learning on arrays with a torch model: the built-in tasks' common shape.

A data source loads the federation's data (one train/test split per participant); an
objective says what is minimized and measured; the model is chosen by input shape (an MLP
for features, a small CNN for images) unless the config names one
(`task.model._target_=my_pkg.Net`, filled with `input_shape`, `num_classes` or
`num_outputs` by name where its constructor asks for them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.data.plots import plot_label_distribution
from fl_chain.errors import UsageError
from fl_chain.settings import TrainingSettings
from fl_chain.task import Evaluated, RunShape, Task, Trained, Weights
from fl_chain.tasks.loading import arguments_for, import_named
from fl_chain.tasks.models import build_model, load_weights, model_weights
from fl_chain.tasks.objectives import Classification, Objective
from fl_chain.tasks.training import fit, predict

# Loads every participant's split; a source may also say `declared_shape()` (input shape,
# class count) when its config fixes them, so the genesis model needs no data.
DataSource = Callable[[RunShape, float], FederatedDataset]


@dataclass(frozen=True)
class ArrayData:
    """One participant's split, and the shape of the model it calls for."""

    split: ParticipantData
    input_shape: tuple[int, ...]
    num_classes: int


class SupervisedTask(Task):
    def __init__(self, source: DataSource, objective: Objective, training: TrainingSettings, *,
                 test_fraction: float = 0.2, proximal_mu: float = 0.0, model: Mapping[str, Any] | None = None) -> None:
        from fl_chain.tasks.catalog import check_test_fraction

        self.source = source
        self.objective = objective
        self.metrics = self.objective.metrics
        self.training = training
        if not 0 <= float(proximal_mu) <= 1e6:
            raise UsageError(f"proximal_mu must be from 0 to 1e6, got {proximal_mu}")
        self.test_fraction = check_test_fraction(test_fraction)
        self.proximal_mu = float(proximal_mu)
        if model is not None and not (isinstance(model, Mapping) and isinstance(model.get("_target_"), str)):
            raise UsageError(f"task.model must name a class: task.model._target_=my_pkg.Net, got {model!r:.80}")
        self.model_config = dict(model) if model is not None else None

    def dataset(self, run: RunShape) -> FederatedDataset:
        return _loaded(self.source, run, self.test_fraction)

    def participant_data(self, index: int, run: RunShape) -> ArrayData:
        dataset = self.dataset(run)
        return ArrayData(dataset.participants[index], dataset.input_shape, dataset.num_classes)

    def pooled_data(self, run: RunShape) -> ArrayData:
        dataset = self.dataset(run)
        return ArrayData(dataset.pooled(), dataset.input_shape, dataset.num_classes)

    def train_examples(self, data: ArrayData) -> int:
        return data.split.examples

    def initial_weights(self, run: RunShape) -> dict[str, np.ndarray]:
        declared = getattr(self.source, "declared_shape", lambda: None)()  # a deployment's data is at the sites
        if declared is None:
            dataset = self.dataset(run)
            declared = dataset.input_shape, dataset.num_classes
        input_shape, num_classes = declared
        return model_weights(self.model(input_shape, num_classes, run.seed))

    def train(self, weights: Weights, data: ArrayData, *, seed: int) -> Trained:
        if data.split.examples == 0:
            raise UsageError(f"{data.split.name} has no training examples")
        model = self._loaded_model(weights, data)
        report = fit(model, data.split.train_x, self.objective.targets(data.split.train_y), self.objective.loss,
                     self.training, seed=seed, proximal_mu=self.proximal_mu)
        return Trained(model_weights(model), report.examples, {"loss": report.loss})

    def evaluate(self, weights: Weights, data: ArrayData) -> Evaluated:
        if len(data.split.test_y) == 0:
            raise UsageError(f"{data.split.name} has no test examples to evaluate on")
        model = self._loaded_model(weights, data)
        outputs = predict(model, data.split.test_x)
        targets = torch.from_numpy(self.objective.targets(data.split.test_y))
        return Evaluated(self.objective.figures(outputs, targets), len(data.split.test_y))

    def plot_data(self, run: RunShape, path: Path) -> bool:
        if not isinstance(self.objective, Classification):
            return False
        plot_label_distribution(self.dataset(run), path)
        return True

    def model(self, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
        """The task's network, its weights drawn from `seed` (the global RNG left untouched)."""
        outputs = self.objective.outputs(num_classes)
        if self.model_config is None:
            return build_model(input_shape, outputs, seed)
        target = self.model_config["_target_"]
        cls = import_named(target, "task.model._target_")
        given = {**{k: v for k, v in self.model_config.items() if k != "_target_"},
                 "input_shape": tuple(input_shape), "num_classes": num_classes, "num_outputs": outputs}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = cls(**arguments_for(cls, given, f"task.model._target_ {target}"))
            except UsageError:
                raise
            except Exception as error:  # noqa: BLE001 - the user's constructor, in one line
                raise UsageError(f"task.model._target_ {target} failed: {type(error).__name__}: {error}") from None
        if not isinstance(model, nn.Module):
            raise UsageError(f"task.model._target_ {target} is not a torch.nn.Module")
        return model

    def _loaded_model(self, weights: Weights, data: ArrayData) -> nn.Module:
        model = self.model(data.input_shape, data.num_classes, 0)
        load_weights(model, weights)
        return model


def _loaded(source: DataSource, run: RunShape, test_fraction: float) -> FederatedDataset:
    return _cached(source, json.dumps([run.seed, run.num_participants, dict(run.partition), test_fraction],
                                      sort_keys=True))


@lru_cache(maxsize=4)  # every participant a process plays shares one load
def _cached(source: DataSource, key: str) -> FederatedDataset:
    seed, num_participants, partition, test_fraction = json.loads(key)
    return source(RunShape(seed, num_participants, partition), test_fraction)
