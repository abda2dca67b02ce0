"""A Flower PyTorch app's task module as an fl-chain task, unchanged.

`task=flower task.module=my_pkg.task` takes a module written as Flower's
quickstart-pytorch writes one:

- `Net`: the model class;
- `load_data(partition_id, num_partitions, ...)`: this participant's train and test
  `DataLoader`s;
- `train(net, trainloader, epochs, lr, device)`: local training, returning the training loss;
- `test(net, testloader, device)`: the loss and either an accuracy or a dict of metrics.

Every other parameter is filled by name from the `task.*` config keys (`task.epochs`,
`task.lr`, `task.batch_size`, ...); `device` is "cpu" unless the config says otherwise.
A module without one of the four names, or with a parameter neither the framework nor
the config can fill, is refused in one line before anything trains. Figures are named
as `test` returns them; `task.metrics` lists the names besides loss (default accuracy),
which decides the run's headline figure and metrics.csv's columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from fl_chain.errors import UsageError
from fl_chain.seeding import derive_seed, seeded_globals
from fl_chain.task import Evaluated, RunShape, Task, Trained, Weights
from fl_chain.tasks.loading import arguments_for, import_module
from fl_chain.tasks.models import load_weights, model_weights
from fl_chain.tasks.training import make_deterministic

NAMES = ("Net", "load_data", "train", "test")
LOAD_DATA = 0x10AD  # the label of the seed load_data runs under
FRAMEWORK_KEYS = ("name", "module", "metrics")


@dataclass(frozen=True)
class Loaders:
    train: DataLoader
    test: DataLoader


class FlowerModuleTask(Task):
    def __init__(self, module: ModuleType, name: str, options: Mapping[str, Any], metrics: tuple[str, ...]) -> None:
        self.module, self.name, self.options = module, name, {"device": "cpu", **options}
        self.metrics = ("loss", *metrics)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlowerModuleTask:
        name = config.get("module")
        if not name or name == "???":
            raise UsageError("task=flower needs the module that holds Net, load_data, train and test: "
                             "task.module=my_pkg.task")
        module = import_module(name, "task.module")
        missing = [attribute for attribute in NAMES if not callable(getattr(module, attribute, None))]
        if missing:
            raise UsageError(f"task.module {name} lacks {', '.join(missing)} (a Flower task module defines "
                             f"{', '.join(NAMES)})")
        metrics = config.get("metrics") or ["accuracy"]
        if not isinstance(metrics, list) or not all(isinstance(m, str) and m and m != "loss" for m in metrics):
            raise UsageError(f"task.metrics must list the names test() reports besides loss, got {metrics!r}")
        options = {key: value for key, value in config.items() if key not in FRAMEWORK_KEYS}
        task = cls(module, str(name), options, tuple(metrics))
        for attribute, given in (("Net", ()), ("load_data", ("partition_id", "num_partitions")),
                                 ("train", ("net", "trainloader")), ("test", ("net", "testloader"))):
            task._arguments(attribute, dict.fromkeys(given))  # every parameter fillable, before anything runs
        return task

    def initial_weights(self, run: RunShape) -> dict[str, np.ndarray]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.seed)
            return model_weights(self._net())

    def participant_data(self, index: int, run: RunShape) -> Loaders:
        """Loaded afresh, with the global generators seeded, each time it is asked for: a
        loader carries state (its own generator, an iterator), and a resumed or reproduced
        run in a new process must see the same data as an uninterrupted one."""
        with seeded_globals(derive_seed(run.seed, index, LOAD_DATA)):
            loaded = self._call("load_data", partition_id=index, num_partitions=run.num_participants)
        if not (isinstance(loaded, tuple) and len(loaded) == 2
                and all(isinstance(loader, DataLoader) for loader in loaded)):
            raise UsageError(f"{self.name}.load_data must return a train and a test DataLoader")
        return Loaders(*loaded)

    def pooled_data(self, run: RunShape) -> Loaders:
        """Every participant's train and test sets concatenated, batched as participant 0's."""
        shares = [self.participant_data(index, run) for index in range(run.num_participants)]
        first = shares[0]
        return Loaders(
            DataLoader(ConcatDataset([s.train.dataset for s in shares]), batch_size=first.train.batch_size,
                       shuffle=True),
            DataLoader(ConcatDataset([s.test.dataset for s in shares]), batch_size=first.test.batch_size))

    def train_examples(self, data: Loaders) -> int:
        return len(data.train.dataset)  # type: ignore[arg-type]

    def train(self, weights: Weights, data: Loaders, *, seed: int) -> Trained:
        net = self._loaded(weights)
        loss = self._call("train", net=net, trainloader=data.train)
        figures = {"loss": float(loss)} if isinstance(loss, float) and math.isfinite(loss) else {}
        return Trained(model_weights(net), self.train_examples(data), figures)

    def evaluate(self, weights: Weights, data: Loaders) -> Evaluated:
        result = self._call("test", net=self._loaded(weights), testloader=data.test)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise UsageError(f"{self.name}.test must return (loss, accuracy) or (loss, {{name: value}})")
        loss, measured = result
        figures = dict(measured) if isinstance(measured, Mapping) else {self.metrics[1]: measured}
        try:
            metrics = {**{str(k): float(v) for k, v in figures.items()}, "loss": float(loss)}  # test()'s own loss
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{self.name}.test returned figures that are not numbers: {result!r}") from None
        return Evaluated(metrics, len(data.test.dataset))  # type: ignore[arg-type]

    def _net(self) -> nn.Module:
        net = self._call("Net")
        if not isinstance(net, nn.Module):
            raise UsageError(f"{self.name}.Net() is not a torch.nn.Module")
        return net

    def _loaded(self, weights: Weights) -> nn.Module:
        net = self._net()
        load_weights(net, weights)
        return net

    def _arguments(self, attribute: str, given: Mapping[str, Any]) -> dict[str, Any]:
        return arguments_for(getattr(self.module, attribute), {**self.options, **given},
                             f"{self.name}.{attribute}")

    def _call(self, attribute: str, **given: Any) -> Any:
        make_deterministic()
        return getattr(self.module, attribute)(**self._arguments(attribute, given))
