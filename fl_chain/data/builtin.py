"""The built-in tasks, from datasets scikit-learn ships (no download at run time).

- `breast_cancer`: 569 rows, 30 tabular features, binary; standardized with federated
  statistics (see `normalization`).
- `digits`: 1797 8x8 grey images, 10 classes, shaped (1, 8, 8) for a CNN; pixels are
  scaled to [0, 1] by their fixed known range 0..16, so nothing needs to be shared.
- `diabetes`: 442 patients, 10 features, a disease-progression score (25..346) to
  regress; standardized like breast_cancer. Dirichlet and pathological splits skew the
  score's quintiles across participants, as they skew classes elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.data.normalization import standardize_federated
from fl_chain.errors import UsageError

if TYPE_CHECKING:
    from fl_chain.data.partition import Partitioning

DIGITS_MAX_PIXEL = 16.0


@dataclass(frozen=True)
class _Source:
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]


def _breast_cancer() -> _Source:
    from sklearn.datasets import load_breast_cancer  # scikit-learn loads slowly: only for a run of the task

    bunch = load_breast_cancer()
    return _Source(bunch.data, bunch.target, tuple(bunch.feature_names), tuple(bunch.target_names))


def _digits() -> _Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = tuple(f"pixel_{row}_{col}" for row in range(8) for col in range(8))
    return _Source(bunch.data, bunch.target, pixels, tuple(str(c) for c in bunch.target_names))


def _diabetes() -> _Source:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return _Source(bunch.data, bunch.target.astype(np.float64), tuple(bunch.feature_names), ())


def _scale_digits(participants: list[ParticipantData], _: tuple[str, ...]) -> list[ParticipantData]:
    image = (-1, 1, 8, 8)
    return [
        replace(
            p,
            train_x=(p.train_x / DIGITS_MAX_PIXEL).reshape(image),
            test_x=(p.test_x / DIGITS_MAX_PIXEL).reshape(image),
        )
        for p in participants
    ]


@dataclass(frozen=True)
class _BuiltinTask:
    load: Callable[[], _Source]
    normalize: Callable[[list[ParticipantData], tuple[str, ...]], list[ParticipantData]]
    input_shape: tuple[int, ...]


_TASKS = {
    "breast_cancer": _BuiltinTask(_breast_cancer, standardize_federated, (30,)),
    "digits": _BuiltinTask(_digits, _scale_digits, (1, 8, 8)),
    "diabetes": _BuiltinTask(_diabetes, standardize_federated, (10,)),
}
QUANTILE_GROUPS = 5  # a regression target is split across participants by its quintiles
BUILTIN_TASKS = tuple(_TASKS)


def load_builtin(
    task: str,
    *,
    num_participants: int,
    partitioning: Partitioning,
    seed: int,
    test_fraction: float = 0.2,
) -> FederatedDataset:
    """`task` split across `num_participants`, each with a local train/test split."""
    from fl_chain.data.partition import partition
    from fl_chain.data.split import split_participant

    if task not in _TASKS:
        raise UsageError(f"unknown built-in task {task!r}; choose one of {BUILTIN_TASKS}")
    builtin = _TASKS[task]
    source = builtin.load()
    shares = partition(_groups(source.y), num_participants, partitioning, seed)
    participants = [
        split_participant(
            f"participant-{index}",
            source.x[rows],
            source.y[rows],
            index=index,
            test_fraction=test_fraction,
            seed=seed,
        )
        for index, rows in enumerate(shares)
    ]
    return FederatedDataset(
        task=task,
        participants=tuple(builtin.normalize(participants, source.feature_names)),
        num_classes=len(source.class_names),
        input_shape=builtin.input_shape,
        feature_names=source.feature_names,
        class_names=source.class_names,
    )


def _groups(y: np.ndarray) -> np.ndarray:
    """Class labels as they are; a continuous target as the index of its quantile group."""
    if np.issubdtype(y.dtype, np.integer):
        return y
    edges = np.quantile(y, np.linspace(0, 1, QUANTILE_GROUPS + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)
