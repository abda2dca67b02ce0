"""The task an experiment config names: a built-in one, a class, or a Flower task module.

- `task=breast_cancer`, `digits`, `diabetes`, `csv`, `images`: the built-in tasks
  (configs/task/*.yaml), all `SupervisedTask`s over their own data source;
- `task._target_=my_pkg.MyTask`: any `fl_chain.task.Task` subclass, built with the other
  `task.*` keys its constructor takes, by name (Hydra's convention);
- `task=flower task.module=my_pkg.task`: a Flower PyTorch app's task module, unchanged
  (fl_chain/tasks/flower.py).

FedProx's proximal term (`strategy.proximal_mu`) is part of local training, so it is
handed to the task; a task that cannot apply it refuses a non-zero one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fl_chain.data.builtin import BUILTIN_TASKS, load_builtin
from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.errors import UsageError
from fl_chain.settings import TrainingSettings
from fl_chain.task import RunShape, Task, named_code
from fl_chain.tasks.loading import arguments_for, import_named

TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "optimizer", "momentum")
REGRESSION_TARGETS = {"diabetes": (150.0, 80.0)}  # center and scale: the score's documented range is 25..346
TASK_NAMES = (*BUILTIN_TASKS, "csv", "images", "flower")


@dataclass(frozen=True)
class BuiltinSource:
    name: str

    def __call__(self, run: RunShape, test_fraction: float) -> FederatedDataset:
        from fl_chain.data.partition import Partitioning

        partition = run.partition
        partitioning = Partitioning(
            scheme=str(partition.get("scheme", "iid")), alpha=float(partition.get("alpha", 0.5)),
            classes_per_participant=int(partition.get("classes_per_participant", 2)),
            min_partition_size=int(partition.get("min_partition_size", Partitioning.min_partition_size)))
        return load_builtin(self.name, num_participants=run.num_participants, partitioning=partitioning,
                            seed=run.seed, test_fraction=test_fraction)


@dataclass(frozen=True)
class TableSource:
    files: tuple[str, ...]
    target: str
    features: tuple[str, ...] | None

    def __call__(self, run: RunShape, test_fraction: float) -> FederatedDataset:
        from fl_chain.data.tables import load_tables

        return load_tables(self.files, target=self.target, features=self.features, seed=run.seed,
                           test_fraction=test_fraction)


@dataclass(frozen=True)
class ImageSource:
    """Image folders: `dirs` in a simulation; in a deployment (`dirs` empty) each site's
    own `data-dir`, against the `classes` the federation declares."""

    dirs: tuple[str, ...]
    size: int
    channels: int
    classes: tuple[str, ...] | None = None

    def __call__(self, run: RunShape, test_fraction: float) -> FederatedDataset:
        from fl_chain.data.images import load_image_folders

        return load_image_folders(self.dirs, size=self.size, channels=self.channels, seed=run.seed,
                                  test_fraction=test_fraction, classes=self.classes)

    def declared_shape(self) -> tuple[tuple[int, ...], int] | None:
        """The model's input shape and class count, if the config says them (no image read)."""
        return ((self.channels, self.size, self.size), len(self.classes)) if self.classes else None

    def site_data(self, folder: Path, *, index: int, seed: int, test_fraction: float) -> ParticipantData:
        """A deployed site's own folder, as participant `index`."""
        from fl_chain.data.images import load_image_folder

        if self.classes is None:
            raise UsageError("a deployed images federation must declare its classes (each site sees only its own "
                             "folder): task.classes=[benign,malignant]")
        return load_image_folder(folder, classes=self.classes, size=self.size, channels=self.channels, seed=seed,
                                 index=index, test_fraction=test_fraction)


def open_task(experiment: Mapping[str, Any]) -> Task:
    """The experiment's task, built once per process for each distinct config."""
    return _open(json.dumps(experiment["task"], sort_keys=True),
                 float((experiment.get("strategy") or {}).get("proximal_mu", 0.0)))


def run_shape(experiment: Mapping[str, Any]) -> RunShape:
    """What the task is told about the run the experiment describes."""
    return RunShape(int(experiment["seed"]), int(experiment["num_participants"]), dict(experiment["partition"]),
                    int(experiment["rounds"]))


def task_label(task: Mapping[str, Any]) -> str:
    """How a task is named in progress lines: its built-in name, class or module."""
    return str(task.get("_target_") or (f"flower:{task.get('module')}" if task.get("name") == "flower" else None)
               or task.get("name"))


def check_task(experiment: Mapping[str, Any]) -> None:
    """A config's task checked before anything runs. A task that is code is imported (its
    errors are the user's to see first); a built-in one is checked without loading torch or
    its data, so that a mistyped value is reported at once."""
    task = experiment["task"]
    if named_code(task):
        open_task(experiment)
        return
    if task.get("name") not in TASK_NAMES:
        raise UsageError(f"unknown task {task.get('name')!r}; choose one of {TASK_NAMES}, or name a class: "
                         "task._target_=my_pkg.MyTask")
    training_settings(task)
    check_test_fraction(task.get("test_fraction", 0.2))
    if task.get("name") == "images":
        from fl_chain.data.images import check_image_settings

        check_image_settings(task.get("size", 32), task.get("channels", 3), _classes(task))


def training_settings(task: Mapping[str, Any]) -> TrainingSettings:
    """A built-in task's local training hyper-parameters (configs/task/*.yaml)."""
    given = {key: task[key] for key in TRAINING_KEYS if task.get(key) is not None}
    try:
        return TrainingSettings(**given)
    except TypeError as missing:
        raise UsageError(f"task settings are incomplete: {missing}") from None


def check_test_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise UsageError(f"task.test_fraction must be between 0 and 1, got {value!r}")
    return float(value)


@lru_cache(maxsize=8)
def _open(task_json: str, proximal_mu: float) -> Task:
    from fl_chain.tasks.objectives import Classification, Objective, Regression
    from fl_chain.tasks.supervised import SupervisedTask  # torch: only once a task is opened

    config: dict[str, Any] = json.loads(task_json)
    if "_target_" in config:
        return _instantiate(config, proximal_mu)
    name = config.get("name")
    if name == "flower":
        from fl_chain.tasks.flower import FlowerModuleTask

        if proximal_mu:
            raise UsageError("a Flower task module's train() takes no proximal term: strategy.proximal_mu must be 0")
        return FlowerModuleTask.from_config(config)
    if name in BUILTIN_TASKS:
        source: Any = BuiltinSource(str(name))
    elif name == "csv":
        source = TableSource(_paths(config.get("files"), "task.files", "a.csv,b.csv"), str(config.get("target")),
                             tuple(config["features"]) if config.get("features") else None)
    elif name == "images":
        source = ImageSource(_paths(config.get("dirs"), "task.dirs", "site_a,site_b"), _int(config, "size", 32),
                             _int(config, "channels", 3), _classes(config))
    else:
        raise UsageError(f"unknown task {name!r}; choose one of {TASK_NAMES}, or name a class: "
                         "task._target_=my_pkg.MyTask")
    objective: Objective = (Regression(*REGRESSION_TARGETS[str(name)]) if str(name) in REGRESSION_TARGETS
                            else Classification())
    return SupervisedTask(source, objective, training_settings(config), test_fraction=config.get("test_fraction", 0.2),
                          proximal_mu=proximal_mu, model=config.get("model"))


def _instantiate(config: dict[str, Any], proximal_mu: float) -> Task:
    target = config["_target_"]
    cls = import_named(target, "task._target_")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UsageError(f"task._target_ {target} is not a subclass of fl_chain.task.Task")
    given = {key: value for key, value in config.items() if key != "_target_"}
    arguments = arguments_for(cls, {**given, "proximal_mu": proximal_mu}, f"task._target_ {target}")
    if proximal_mu and "proximal_mu" not in arguments:
        raise UsageError(f"task._target_ {target} takes no proximal_mu: strategy.proximal_mu must be 0")
    try:
        return cls(**arguments)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's constructor, in one line
        raise UsageError(f"task._target_ {target} failed: {type(error).__name__}: {error}") from None


def _paths(value: object, key: str, example: str, what: str = "paths") -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{key} must be a list of {what}, e.g. {key}=[{example}], got {value!r}")
    return tuple(value)


def _classes(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    classes = config.get("classes")
    return _paths(classes, "task.classes", "benign,malignant", "names") if classes is not None else None


def _int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"task.{key} must be an integer, got {value!r}")
    return value
