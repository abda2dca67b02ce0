"""The task seam: built-in tasks beyond tabular classification, a researcher's own Task
class, a Flower task module, and the one-line refusals of what cannot be one."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fl_chain.data.images import load_image_folders
from fl_chain.errors import DataError, UsageError
from fl_chain.task import RunShape, Task, evaluate_seeded, train_seeded
from fl_chain.tasks.baseline import centralized
from fl_chain.tasks.catalog import open_task
from fl_chain.tasks.flower import FlowerModuleTask

RUN = RunShape(0, 3, {"scheme": "iid"}, rounds=2)
TRAINING = {"epochs": 1, "batch_size": 16, "learning_rate": 0.05, "optimizer": "sgd", "momentum": 0.9}


def experiment(**task: Any) -> dict[str, Any]:
    return {"task": task, "strategy": {"proximal_mu": 0.0}}


def write_image_folders(root: Path, sites: int = 3, per_class: int = 8, size: int = 12) -> list[str]:
    """Sites with two classes a CNN can tell apart: bright top halves and bright bottom halves."""
    rng = np.random.default_rng(7)
    dirs = []
    for site in range(sites):
        for label, rows in (("top", slice(0, size // 2)), ("bottom", slice(size // 2, size))):
            folder = root / f"site_{site}" / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                pixels[rows] += 180
                suffix = ".png" if index % 2 else ".jpg"
                Image.fromarray(pixels).save(folder / f"{index}{suffix}")
        dirs.append(str(root / f"site_{site}"))
    return dirs


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for a test's own package, outside the repository."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("outside_")]:
        del sys.modules[name]


# ---------------------------------------------------------------- diabetes


def test_diabetes_regresses_and_reports_mse_and_r2() -> None:
    task = open_task(experiment(name="diabetes", **TRAINING))
    assert task.metrics == ("loss", "mse", "r2") and task.headline == "mse"
    data = task.participant_data(0, RUN)
    assert data.split.train_y.dtype == np.float32 and data.split.train_y.max() > 25  # the score itself, not a class
    start = task.initial_weights(RUN)
    before = task.evaluate(start, data)
    trained = task.train(start, data, seed=1)
    after = task.evaluate(trained.tensors, data)
    assert set(after.metrics) == {"loss", "mse", "r2"}
    assert after.metrics["mse"] < before.metrics["mse"]  # one epoch already beats the untrained model
    assert after.metrics["mse"] == pytest.approx(after.metrics["loss"] * 80.0**2)


def test_diabetes_partitions_skew_the_score_like_classes() -> None:
    task = open_task(experiment(name="diabetes", **TRAINING))
    skewed = RunShape(0, 3, {"scheme": "pathological", "classes_per_participant": 1, "min_partition_size": 2})
    means = [float(task.participant_data(index, skewed).split.train_y.mean()) for index in range(3)]
    assert max(means) - min(means) > 60  # each holds other quintiles of the score


# ---------------------------------------------------------------- images


def test_image_folders_load_as_participants_with_one_class_vocabulary(tmp_path: Path) -> None:
    dirs = write_image_folders(tmp_path)
    dataset = load_image_folders(dirs, size=8, channels=3, seed=0)
    assert dataset.class_names == ("bottom", "top") and dataset.input_shape == (3, 8, 8)
    assert [p.examples + len(p.test_y) for p in dataset.participants] == [16, 16, 16]
    first = dataset.participants[0]
    assert first.train_x.dtype == np.float32 and 0.0 <= first.train_x.min() and first.train_x.max() <= 1.0
    grey = load_image_folders(dirs, size=6, channels=1, seed=0)
    assert grey.input_shape == (1, 6, 6)


def test_the_images_task_learns_and_is_deterministic(tmp_path: Path) -> None:
    task = open_task(experiment(name="images", dirs=write_image_folders(tmp_path), size=12, channels=3,
                                **{**TRAINING, "epochs": 3}))
    start, data = task.initial_weights(RUN), task.participant_data(0, RUN)
    first = train_seeded(task, start, data, 5)
    again = train_seeded(task, start, data, 5)
    assert all(np.array_equal(first.tensors[name], again.tensors[name]) for name in first.tensors)
    assert centralized(task, RunShape(0, 3, {}, rounds=4)).metrics["accuracy"] >= 0.9


@pytest.mark.parametrize("damage", ["not an image", "a GIF named .png", "no classes", "one class", "missing folder"])
def test_bad_image_folders_are_one_clear_error(tmp_path: Path, damage: str) -> None:
    dirs = write_image_folders(tmp_path, sites=2)
    if damage == "not an image":
        (Path(dirs[0]) / "top" / "broken.png").write_bytes(b"these are not pixels")
        expected = "broken.png is not an image"
    elif damage == "a GIF named .png":  # decoded by content: only PNG and JPEG decoders are used
        Image.new("RGB", (12, 12)).save(Path(dirs[0]) / "top" / "animated.png", format="GIF")
        expected = "animated.png is not an image"
    elif damage == "no classes":
        empty = tmp_path / "empty"
        empty.mkdir()
        dirs.append(str(empty))
        expected = "has no class sub-folders"
    elif damage == "one class":
        dirs = [str(Path(dirs[0]) / "top")]
        expected = "has no class sub-folders"
    else:
        dirs.append(str(tmp_path / "nowhere"))
        expected = "is not a directory"
    with pytest.raises((DataError, UsageError), match=expected):
        load_image_folders(dirs, size=8, channels=3, seed=0)


def test_declared_classes_fix_the_vocabulary_and_refuse_a_folder_outside_it(tmp_path: Path) -> None:
    dirs = write_image_folders(tmp_path, sites=2)
    declared = load_image_folders(dirs, size=8, channels=3, seed=0, classes=["top", "bottom", "middle"])
    assert declared.class_names == ("top", "bottom", "middle") and declared.num_classes == 3
    assert set(declared.participants[0].train_y.tolist()) <= {0, 1}  # indices follow the declared order
    with pytest.raises(DataError, match=r"site_0 has class sub-folders \['top'\] that task.classes \['bottom'"):
        load_image_folders(dirs, size=8, channels=3, seed=0, classes=["bottom", "left"])
    with pytest.raises(UsageError, match="task.classes must list from 2 to 1000 distinct class names"):
        load_image_folders(dirs, size=8, channels=3, seed=0, classes=["top", "top"])


def test_a_task_that_declares_its_classes_makes_its_genesis_model_without_any_image(tmp_path: Path) -> None:
    """A deployment's images are at the sites: the deployer has none, yet makes the same model."""
    settings = {"size": 8, "channels": 3, **TRAINING}
    declared = open_task(experiment(name="images", dirs=[], classes=["bottom", "top"], **settings))
    found = open_task(experiment(name="images", dirs=write_image_folders(tmp_path), **settings))
    weights, expected = declared.initial_weights(RUN), found.initial_weights(RUN)
    assert all(np.array_equal(weights[name], expected[name]) for name in expected)


def test_a_linked_image_outside_the_folder_is_not_read(tmp_path: Path) -> None:
    dirs = write_image_folders(tmp_path, sites=2)
    (Path(dirs[0]) / "top" / "elsewhere.png").symlink_to(Path(dirs[1]) / "top" / "1.png")
    counts = [p.examples + len(p.test_y) for p in load_image_folders(dirs, size=8, channels=3, seed=0).participants]
    assert counts == [16, 16]


def test_a_named_model_class_replaces_the_default_cnn(tmp_path: Path, package: Path) -> None:
    (package / "outside_models.py").write_text(textwrap.dedent("""
        from torch import nn

        class Tiny(nn.Module):
            def __init__(self, input_shape, num_classes, hidden=4):
                super().__init__()
                self.layers = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2],
                                            hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

            def forward(self, x):
                return self.layers(x)
    """))
    task = open_task(experiment(name="images", dirs=write_image_folders(tmp_path, sites=2), size=8, channels=1,
                                model={"_target_": "outside_models.Tiny", "hidden": 5}, **TRAINING))
    assert {name: array.shape for name, array in task.initial_weights(RUN).items()}["layers.1.weight"] == (5, 64)


# ---------------------------------------------------------------- a researcher's own Task class


OWN_TASK = """
import numpy as np

from fl_chain.task import Evaluated, Task, Trained


class MeanTask(Task):
    '''Learns each participant's mean of a fixed vector: the smallest Task there is.'''

    metrics = ("loss", "distance")

    def __init__(self, target=1.5, step=0.5):
        self.target, self.step = target, step

    def initial_weights(self, run):
        return {"w": np.random.default_rng(run.seed).normal(size=3).astype(np.float32)}

    def participant_data(self, index, run):
        return {"examples": 10 + index, "goal": np.full(3, self.target + index, dtype=np.float32)}

    def pooled_data(self, run):
        return {"examples": 30, "goal": np.full(3, self.target + 1, dtype=np.float32)}

    def train_examples(self, data):
        return data["examples"]

    def train(self, weights, data, *, seed):
        w = weights["w"] + self.step * (data["goal"] - weights["w"]) + np.random.normal(0, 1e-3, 3)
        return Trained({"w": w.astype(np.float32)}, data["examples"], {"loss": float(np.abs(w - data["goal"]).sum())})

    def evaluate(self, weights, data):
        distance = float(np.abs(weights["w"] - data["goal"]).sum())
        return Evaluated({"loss": distance**2, "distance": distance}, data["examples"])
"""


def test_a_task_class_from_an_outside_package_is_built_with_its_config(package: Path) -> None:
    (package / "outside_tasks.py").write_text(OWN_TASK)
    task = open_task(experiment(_target_="outside_tasks.MeanTask", target=2.0, step=0.25, unrelated="ignored"))
    assert isinstance(task, Task) and task.metrics == ("loss", "distance") and task.headline == "distance"
    data = task.participant_data(1, RUN)
    assert data["goal"][0] == 3.0 and task.train_examples(data) == 11
    start = task.initial_weights(RUN)
    first, again = train_seeded(task, start, data, 9), train_seeded(task, start, data, 9)
    assert np.array_equal(first.tensors["w"], again.tensors["w"])  # the framework seeded NumPy's global RNG
    assert not np.array_equal(first.tensors["w"], train_seeded(task, start, data, 10).tensors["w"])
    assert evaluate_seeded(task, first.tensors, data, 0).metrics["distance"] < task.evaluate(start, data).metrics["distance"]


@pytest.mark.parametrize(("target", "expected"), [
    ("outside_nothing.Task", "no module named 'outside_nothing'"),
    ("outside_tasks.Missing", "outside_tasks has no 'Missing'"),
    ("outside_tasks.np", "is not a subclass of fl_chain.task.Task"),
    ("not a name", "must be a dotted name"),
])
def test_a_task_class_that_cannot_be_one_is_one_line(package: Path, target: str, expected: str) -> None:
    (package / "outside_tasks.py").write_text(OWN_TASK)
    with pytest.raises(UsageError, match=expected):
        open_task(experiment(_target_=target))


def test_a_task_class_that_cannot_take_the_proximal_term_refuses_it(package: Path) -> None:
    (package / "outside_tasks.py").write_text(OWN_TASK)
    with pytest.raises(UsageError, match="takes no proximal_mu"):
        open_task({"task": {"_target_": "outside_tasks.MeanTask"}, "strategy": {"proximal_mu": 0.1}})


# ---------------------------------------------------------------- Flower task modules


FLOWER_MODULE = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def load_data(partition_id, num_partitions, batch_size=8):
    generator = torch.Generator().manual_seed(partition_id)
    x = torch.randn(40, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    return (DataLoader(TensorDataset(x[:32], y[:32]), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(x[32:], y[32:]), batch_size=batch_size))


def train(net, trainloader, epochs, lr, device):
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(epochs):
        for x, y in trainloader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
    return loss.item()


def test(net, testloader, device):
    with torch.no_grad():
        x, y = next(iter(testloader))
        out = net(x)
        return nn.functional.cross_entropy(out, y).item(), {"accuracy": (out.argmax(1) == y).float().mean().item(),
                                                             "positives": float(out.argmax(1).sum())}
"""


def flower_task(package: Path, source: str = FLOWER_MODULE, **config: Any) -> Task:
    (package / "outside_app.py").write_text(source)
    return open_task(experiment(name="flower", module="outside_app", epochs=2, lr=0.1, **config))


def test_a_flower_task_module_trains_unchanged_and_reproducibly(package: Path) -> None:
    task = flower_task(package, metrics=["accuracy", "positives"])
    assert isinstance(task, FlowerModuleTask) and task.metrics == ("loss", "accuracy", "positives")
    start, data = task.initial_weights(RUN), task.participant_data(1, RUN)
    assert all(np.array_equal(start[k], task.initial_weights(RUN)[k]) for k in start)
    assert task.train_examples(data) == 32
    first, again = train_seeded(task, start, data, 3), train_seeded(task, start, data, 3)
    assert all(np.array_equal(first.tensors[k], again.tensors[k]) for k in first.tensors)  # the shuffle was seeded
    assert not all(np.array_equal(first.tensors[k], train_seeded(task, start, data, 4).tensors[k])
                   for k in first.tensors)
    scored = task.evaluate(first.tensors, data)
    assert set(scored.metrics) == {"loss", "accuracy", "positives"} and scored.examples == 8
    assert centralized(task, RUN).examples == 24  # every participant's test set, pooled


@pytest.mark.parametrize(("change", "expected"), [
    (("def test(", "def check("), "lacks test"),
    (("def load_data(partition_id, num_partitions, batch_size=8)", "def load_data(partition_id, num_partitions, "
                                                                   "split_seed)"), "needs split_seed"),
    (("import torch\n", "import torch\nraise RuntimeError('no GPU here')\n"), "failed to import: RuntimeError"),
])
def test_a_flower_module_that_cannot_be_called_is_one_line(package: Path, change: tuple[str, str],
                                                            expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        flower_task(package, FLOWER_MODULE.replace(*change))


def test_a_flower_module_is_named(package: Path) -> None:
    with pytest.raises(UsageError, match="task=flower needs the module"):
        open_task(experiment(name="flower", module="???"))
    with pytest.raises(UsageError, match="takes no proximal term"):
        open_task({"task": {"name": "flower", "module": "outside_app"}, "strategy": {"proximal_mu": 0.5}})


def test_a_model_that_is_not_a_named_class_is_refused_before_any_import(tmp_path: Path) -> None:
    """A list of pairs would become a mapping through dict(): it is refused as it is."""
    for model in ([["_target_", "subprocess.Popen"], ["args", "true"]], "subprocess.Popen", {"hidden": 3}):
        with pytest.raises(UsageError, match="task.model must name a class"):
            open_task(experiment(name="images", dirs=["a"], model=model, **TRAINING))


def test_a_flower_modules_own_shuffles_are_seeded_and_nothing_carries_over(package: Path) -> None:
    """load_data drawing from NumPy's global generator gives the same data every time."""
    shuffled = FLOWER_MODULE.replace("    generator = torch.Generator().manual_seed(partition_id)\n    x = torch.randn(40, 4, generator=generator)",
                                     "    import numpy as np\n    x = torch.tensor(np.random.normal(size=(40, 4)), dtype=torch.float32)")
    assert shuffled != FLOWER_MODULE
    task = flower_task(package, shuffled)
    first, again = task.participant_data(0, RUN), task.participant_data(0, RUN)
    assert torch_equal(first.train.dataset.tensors[0], again.train.dataset.tensors[0])
    assert not torch_equal(first.train.dataset.tensors[0], task.participant_data(1, RUN).train.dataset.tensors[0])


def torch_equal(left: Any, right: Any) -> bool:
    return bool((left == right).all())
