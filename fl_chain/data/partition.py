"""Splitting a pooled dataset's rows across participants with flwr-datasets partitioners.

The partitioners work on a Hugging Face `datasets.Dataset`; only the labels and the row
numbers go into it (the features stay in NumPy and are gathered by row afterwards).
Rows are shuffled with the seed first, because `IidPartitioner` takes contiguous shards
and has no seed of its own.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import datasets
import numpy as np
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
)
from flwr_datasets.partitioner.partitioner import Partitioner

from fl_chain.data.split import MIN_ROWS
from fl_chain.errors import DataError, UsageError

SCHEMES = ("iid", "dirichlet", "pathological")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partitioning:
    """How labels are spread: `iid`; `dirichlet` with concentration `alpha` (smaller is
    more skewed), redrawn (up to 10 times, by flwr-datasets) until every participant has
    `min_partition_size` rows; or `pathological`, `classes_per_participant` classes each
    (participant i always gets class i mod #classes, the rest are drawn with the seed).
    """

    scheme: str = "iid"
    alpha: float = 0.5
    classes_per_participant: int = 2
    min_partition_size: int = 20

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise UsageError(f"unknown partitioning {self.scheme!r}; choose one of {SCHEMES}")
        if not self.alpha > 0:
            raise UsageError(f"dirichlet alpha must be positive, got {self.alpha}")
        if self.classes_per_participant < 1:
            raise UsageError(
                f"classes_per_participant must be at least 1, got {self.classes_per_participant}"
            )
        if self.min_partition_size < MIN_ROWS:
            raise UsageError(
                f"min_partition_size must be at least {MIN_ROWS} (a train and a test row), "
                f"got {self.min_partition_size}"
            )


def partition(
    labels: np.ndarray, num_participants: int, partitioning: Partitioning, seed: int
) -> list[np.ndarray]:
    """The row numbers (into `labels`) that each participant holds, deterministic in seed.

    Pathological partitioning leaves out the rows of classes no participant drew (only
    possible with fewer participants x classes_per_participant than classes); that is
    logged as a warning.
    """
    if not 1 <= num_participants <= len(labels):
        raise UsageError(
            f"num_participants must be between 1 and the {len(labels)} rows, got {num_participants}"
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    partitioner = _partitioner(num_participants, partitioning, seed)
    partitioner.dataset = datasets.Dataset.from_dict(
        {"row": order, "label": np.asarray(labels)[order]}
    )
    with warnings.catch_warnings():
        # Dirichlet warns on every redraw; a failure after the last one raises below.
        warnings.simplefilter("ignore")
        try:
            shares = [
                np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64)
                for i in range(num_participants)
            ]
        except ValueError as exc:
            raise DataError(
                f"{partitioning.scheme} partitioning of {len(labels)} rows across "
                f"{num_participants} participants failed: {exc} "
                "(try fewer participants, a larger alpha or a smaller min_partition_size)"
            ) from exc
    left_out = len(labels) - sum(len(share) for share in shares)
    if left_out:
        log.warning(
            "%s partitioning leaves out %d rows of classes no participant drew",
            partitioning.scheme, left_out,
        )
    return shares


def _partitioner(num_participants: int, partitioning: Partitioning, seed: int) -> Partitioner:
    if partitioning.scheme == "iid":
        return IidPartitioner(num_partitions=num_participants)
    if partitioning.scheme == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_participants,
            partition_by="label",
            alpha=float(partitioning.alpha),
            min_partition_size=partitioning.min_partition_size,
            seed=seed,
        )
    return PathologicalPartitioner(
        num_partitions=num_participants,
        partition_by="label",
        num_classes_per_partition=partitioning.classes_per_participant,
        class_assignment_mode="first-deterministic",
        seed=seed,
    )
