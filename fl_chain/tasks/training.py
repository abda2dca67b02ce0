"""Deterministic local training and evaluation on CPU.

Same model, data, settings and seed give bit-identical weights on the same machine and
software: shuffling uses its own seeded generator, the global torch RNG is forked and
seeded, deterministic algorithms are enforced and torch runs on one thread (a parallel
reduction may sum in a different order from run to run). Results across different CPUs
or torch builds may still differ in the last bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from fl_chain.data.dataset import ParticipantData
from fl_chain.errors import UsageError
from fl_chain.settings import TrainingSettings

EVALUATION_BATCH = 4096


@dataclass(frozen=True)
class TrainReport:
    """What a participant reports: mean cross-entropy of the last epoch (without the
    proximal term), its number of training examples (the FedAvg weight) and steps taken."""

    loss: float
    examples: int
    steps: int


class Evaluation(NamedTuple):
    """Mean cross-entropy and accuracy over `examples` test examples."""

    loss: float
    accuracy: float
    examples: int

    @classmethod
    def weighted_mean(cls, evaluations: Sequence[Evaluation]) -> Evaluation:
        """The example-weighted mean: the federation's figure from per-participant ones."""
        total = sum(e.examples for e in evaluations)
        if total == 0:
            raise UsageError("no test examples to evaluate on")
        return cls(
            loss=sum(e.loss * e.examples for e in evaluations) / total,
            accuracy=sum(e.accuracy * e.examples for e in evaluations) / total,
            examples=total,
        )


def make_deterministic() -> None:
    """Process-wide torch settings that make training repeatable."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def train(
    model: nn.Module,
    data: ParticipantData,
    settings: TrainingSettings,
    *,
    seed: int,
    proximal_mu: float = 0.0,
) -> TrainReport:
    """Train `model` in place on `data`'s train split.

    With proximal_mu > 0 this is FedProx: the loss gains mu/2 * ||w - w_start||^2, where
    w_start are the weights the model holds on entry (the global model it was given).
    """
    if proximal_mu < 0:
        raise UsageError(f"proximal_mu must be non-negative, got {proximal_mu}")
    if data.examples == 0:
        raise UsageError(f"{data.name} has no training examples")
    make_deterministic()
    x = torch.from_numpy(data.train_x)
    y = torch.from_numpy(data.train_y)
    anchor = [p.detach().clone() for p in model.parameters()]
    shuffle = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = _optimizer(model, settings)
        steps = 0
        for _ in range(settings.epochs):
            loss_sum = 0.0
            for batch in torch.randperm(len(y), generator=shuffle).split(settings.batch_size):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                if proximal_mu:
                    (loss + _proximal_term(model, anchor, proximal_mu)).backward()
                else:
                    loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
                steps += 1
    return TrainReport(loss=loss_sum / len(y), examples=len(y), steps=steps)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> Evaluation:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    if len(y) == 0:
        raise UsageError("no test examples to evaluate on")
    make_deterministic()
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), EVALUATION_BATCH):
            inputs = torch.from_numpy(x[start : start + EVALUATION_BATCH])
            labels = torch.from_numpy(y[start : start + EVALUATION_BATCH])
            logits = model(inputs)
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == labels).sum())
    return Evaluation(loss=loss_sum / len(y), accuracy=correct / len(y), examples=len(y))


def evaluate_participants(model: nn.Module, participants: Sequence[ParticipantData]) -> Evaluation:
    """Each participant scores `model` on its own test split; the example-weighted mean."""
    return Evaluation.weighted_mean([evaluate(model, p.test_x, p.test_y) for p in participants])


def _optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum)


def _proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    distance = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
    return 0.5 * mu * distance
