"""A participant's local train/test split, made from its own rows only.

A classification split is stratified when every class can appear on both sides, so a
small participant's test split still reflects its label mix; otherwise (and for a
regression target) it is a plain shuffle.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from fl_chain.data.dataset import ParticipantData
from fl_chain.errors import DataError, UsageError
from fl_chain.seeding import derive_seed

MIN_ROWS = 2  # one to train on, one to test on


def split_participant(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    index: int,
    test_fraction: float,
    seed: int,
    dropped_rows: int = 0,
) -> ParticipantData:
    """Split participant `index`'s rows (x, y) into train and test, seeded per participant."""
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if len(y) < MIN_ROWS:
        raise DataError(
            f"{name} has {len(y)} usable rows; it needs at least {MIN_ROWS} for a train/test split"
        )
    rows = np.arange(len(y))
    classes = np.issubdtype(y.dtype, np.integer)
    train, test = train_test_split(
        rows,
        test_size=test_fraction,
        random_state=derive_seed(seed, index),
        stratify=y if classes and _can_stratify(y, test_fraction) else None,
    )
    kind = np.int64 if classes else np.float32
    return ParticipantData(
        name=name,
        train_x=np.ascontiguousarray(x[train], dtype=np.float32),
        train_y=y[train].astype(kind),
        test_x=np.ascontiguousarray(x[test], dtype=np.float32),
        test_y=y[test].astype(kind),
        dropped_rows=dropped_rows,
    )


def _can_stratify(y: np.ndarray, test_fraction: float) -> bool:
    """Whether each class can have a row on both sides (scikit-learn's conditions)."""
    _, counts = np.unique(y, return_counts=True)
    test_rows = math.ceil(test_fraction * len(y))
    train_rows = len(y) - test_rows
    return bool(counts.min() >= 2 and min(test_rows, train_rows) >= len(counts))
