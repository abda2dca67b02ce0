"""Deterministic local training and scoring of a torch model on arrays, on CPU.

Same model, data, settings and seed give bit-identical weights on the same machine and
software: shuffling uses its own seeded generator, the global torch RNG is forked and
seeded, deterministic algorithms are enforced and torch runs on one thread (a parallel
reduction may sum in a different order from run to run). Results across different CPUs
or torch builds may still differ in the last bits. What is minimized and what is
measured is the objective's (fl_chain/tasks/objectives.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fl_chain.errors import UsageError
from fl_chain.settings import TrainingSettings

EVALUATION_BATCH = 4096
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainReport:
    """Mean loss of the last epoch (without the proximal term), the number of training
    examples (the FedAvg weight) and the optimizer steps taken."""

    loss: float
    examples: int
    steps: int


def make_deterministic() -> None:
    """Process-wide torch settings that make training repeatable."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, loss_of: Loss, settings: TrainingSettings, *,
        seed: int, proximal_mu: float = 0.0) -> TrainReport:
    """Train `model` in place on (x, y).

    With proximal_mu > 0 this is FedProx's local objective: the loss gains
    mu/2 * ||w - w_start||^2, where w_start are the weights the model holds on entry (the
    global model it was given).
    """
    if proximal_mu < 0:
        raise UsageError(f"proximal_mu must be non-negative, got {proximal_mu}")
    if len(y) == 0:
        raise UsageError("no training examples")
    make_deterministic()
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    anchor = [p.detach().clone() for p in model.parameters()]
    shuffle = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = _optimizer(model, settings)
        steps = 0
        for _ in range(settings.epochs):
            loss_sum = 0.0
            for batch in torch.randperm(len(targets), generator=shuffle).split(settings.batch_size):
                optimizer.zero_grad()
                loss = loss_of(model(inputs[batch]), targets[batch])
                (loss + _proximal_term(model, anchor, proximal_mu) if proximal_mu else loss).backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
                steps += 1
    return TrainReport(loss=loss_sum / len(targets), examples=len(targets), steps=steps)


def predict(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """The model's outputs for every row of `x`, in batches, without gradients."""
    make_deterministic()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[start:start + EVALUATION_BATCH]))
                          for start in range(0, len(x), EVALUATION_BATCH)])


def _optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum)


def _proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    distance = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
    return 0.5 * mu * distance
