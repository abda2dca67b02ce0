"""What a supervised task minimizes and measures: classification or regression.

Figures are computed in sums over a participant's test split and divided by its size,
so the federation's figure (the example-weighted mean of the participants') is the
pooled one for loss, accuracy and MSE. R² is each participant's own (against its own
test mean); its weighted mean is not the pooled R².
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fl_chain.errors import UsageError


class Objective(ABC):
    metrics: tuple[str, ...]

    @abstractmethod
    def outputs(self, num_classes: int) -> int:
        """The model's output width."""

    @abstractmethod
    def targets(self, y: np.ndarray) -> np.ndarray:
        """Labels as the loss takes them."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch."""

    @abstractmethod
    def figures(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Every figure in `metrics` over a whole test split."""


class Classification(Objective):
    """Cross-entropy over class logits; accuracy."""

    metrics = ("loss", "accuracy")

    def outputs(self, num_classes: int) -> int:
        if num_classes < 2:
            raise UsageError(f"a classifier needs at least 2 classes, got {num_classes}")
        return num_classes

    def targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int64)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def figures(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        loss = nn.functional.cross_entropy(outputs, targets, reduction="sum").item() / len(targets)
        return {"loss": loss, "accuracy": int((outputs.argmax(dim=1) == targets).sum()) / len(targets)}


@dataclass(frozen=True)
class Regression(Objective):
    """Mean squared error on the target scaled by a fixed, published `center` and `scale`
    (so nothing about any site's targets is shared); `mse` is in the target's own units."""

    center: float
    scale: float
    metrics = ("loss", "mse", "r2")

    def outputs(self, num_classes: int) -> int:
        return 1

    def targets(self, y: np.ndarray) -> np.ndarray:
        return ((y.astype(np.float64) - self.center) / self.scale).astype(np.float32).reshape(-1, 1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, targets)

    def figures(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        squared = float(((outputs.double() - targets.double()) ** 2).sum())
        spread = float(((targets.double() - targets.double().mean()) ** 2).sum())
        loss = squared / len(targets)
        return {"loss": loss, "mse": loss * self.scale**2, "r2": 1.0 - squared / spread if spread > 0 else 0.0}
