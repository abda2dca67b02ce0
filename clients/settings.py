"""What every participant must agree on for a run, sent to ClientApps with each message.

A JSON-able snapshot of the resolved config plus where the chain and the store are. In a
simulation the participants' processes learn everything from it; nothing else is shared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from clients.data.dataset import FederatedDataset
from fl_chain.errors import UsageError

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainingSettings:
    """Local training hyper-parameters for one round (mirrored by the task config).

    `momentum` applies to SGD only. Optimizer state starts fresh every round.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "sgd"
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError(
                f"epochs and batch_size must be at least 1, got {self.epochs} and {self.batch_size}"
            )
        if not self.learning_rate > 0:
            raise UsageError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class RunSettings:
    seed: int
    num_participants: int
    num_validators: int
    chain_url: str
    contract: str
    store: dict[str, Any]  # the content store as every process opens it (fl_chain.storage.backends)
    task: dict[str, Any]
    partition: dict[str, Any]
    proximal_mu: float
    drills: list[dict[str, Any]] = field(default_factory=list)  # participant fault drills (clients/drills.py)
    # deployments: the features, classes and standardization the sites agreed on (clients/data/preprocessing.py)
    preprocessing: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        return cls(**json.loads(text))

    @property
    def training(self) -> TrainingSettings:
        return training_settings(self.task)


def training_settings(task: Mapping[str, Any]) -> TrainingSettings:
    """Local training hyper-parameters from a task config (configs/task/*.yaml)."""
    return TrainingSettings(
        epochs=int(task["epochs"]),
        batch_size=int(task["batch_size"]),
        learning_rate=float(task["learning_rate"]),
        optimizer=str(task.get("optimizer", "sgd")),
        momentum=float(task.get("momentum", 0.0)),
    )


def load_dataset(settings: RunSettings) -> FederatedDataset:
    """The run's data, split across participants (cached: the same in every process)."""
    return _load_dataset(json.dumps(settings.task, sort_keys=True), json.dumps(settings.partition, sort_keys=True),
                         settings.num_participants, settings.seed)


@lru_cache(maxsize=4)
def _load_dataset(task_json: str, partition_json: str, num_participants: int, seed: int) -> FederatedDataset:
    from clients.data.builtin import BUILTIN_TASKS, load_builtin
    from clients.data.partition import Partitioning
    from clients.data.tables import load_tables

    task = json.loads(task_json)
    test_fraction = float(task.get("test_fraction", 0.2))
    if task["name"] in BUILTIN_TASKS:
        partition = json.loads(partition_json)
        partitioning = Partitioning(
            scheme=partition["scheme"],
            alpha=float(partition.get("alpha", 0.5)),
            classes_per_participant=int(partition.get("classes_per_participant", 2)),
            min_partition_size=int(partition.get("min_partition_size", Partitioning.min_partition_size)),
        )
        return load_builtin(task["name"], num_participants=num_participants, partitioning=partitioning,
                            seed=seed, test_fraction=test_fraction)
    if task["name"] != "csv":
        raise UsageError(f"unknown task {task['name']!r}; choose one of {(*BUILTIN_TASKS, 'csv')}")
    return load_tables(task["files"], target=task["target"], features=task.get("features"), seed=seed,
                       test_fraction=test_fraction)
