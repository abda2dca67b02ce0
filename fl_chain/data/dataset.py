"""What a loaded task looks like: one train/test split per participant.

Each participant keeps its own test split, so federated evaluation is every participant
scoring the global model on its own held-out data; the global figure is their
example-weighted mean. Pooling exists only for the centralized baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParticipantData:
    """One participant's examples: features float32, targets int64 class indices (or
    float32 values for a regression task).

    `dropped_rows` counts rows the loader left out (rows without a target).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    dropped_rows: int = 0

    @property
    def examples(self) -> int:
        """Training examples: the weight of this participant's update in FedAvg."""
        return len(self.train_y)


@dataclass(frozen=True)
class FederatedDataset:
    """A task's data as the federation sees it, one entry per participant."""

    task: str
    participants: tuple[ParticipantData, ...]
    num_classes: int
    input_shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]

    def pooled(self) -> ParticipantData:
        """All train splits and all test splits concatenated, for the centralized baseline."""
        return ParticipantData(
            name="pooled",
            train_x=np.concatenate([p.train_x for p in self.participants]),
            train_y=np.concatenate([p.train_y for p in self.participants]),
            test_x=np.concatenate([p.test_x for p in self.participants]),
            test_y=np.concatenate([p.test_y for p in self.participants]),
            dropped_rows=sum(p.dropped_rows for p in self.participants),
        )

    def label_counts(self) -> np.ndarray:
        """Examples per (participant, class), train and test together."""
        return np.array(
            [
                np.bincount(np.concatenate([p.train_y, p.test_y]), minlength=self.num_classes)
                for p in self.participants
            ],
            dtype=np.int64,
        )
