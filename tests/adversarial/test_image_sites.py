"""The images task's declared classes (`task.classes`) and a deployed site's own folder.

`task.classes` comes from whoever writes the experiment: the deployer (bound by the task
hash, so every site trains with it) or the publisher of a run directory (`flchain
reproduce` builds the genesis model from it, without any image: SupervisedTask's
`declared_shape`). The folder is the site's own, but what is in it should be one clear
error or skipped, never read outside it or hang.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fl_chain.data.images import MAX_SIZE, load_image_folder
from fl_chain.errors import DataError, UsageError
from fl_chain.tasks.catalog import ImageSource, check_task, open_task

TRAINING = {"epochs": 1, "batch_size": 16, "learning_rate": 0.05, "optimizer": "sgd", "momentum": 0.9}


def experiment(**task: Any) -> dict[str, Any]:
    return {"task": {"name": "images", "dirs": [], **TRAINING, **task}, "strategy": {"proximal_mu": 0.0}}


def image(path: Path, value: int = 200, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def site(root: Path) -> Path:
    for name, value in (("benign", 20), ("malignant", 220)):
        for index in range(4):
            image(root / name / f"{index}.png", value)
    return root


# ------------------------------------------------------------ task.classes


def test_thousands_of_declared_classes_are_refused_before_a_model_is_built() -> None:
    """WORKS today (the test fails): nothing bounds len(task.classes). 100,000 names fit in
    a published config.yaml (1 MiB); at task.size=512 the default CNN's classifier is then
    32*128*128 x 100,000 = 5.2e10 weights (210 GB): `flchain reproduce` (the genesis model,
    from the declared shape alone) and every deployed site (its model is built before the
    base model's shape is compared) run out of memory. Tables cap labels at 1,000
    (fl_chain/data/preprocessing.py MAX_LABELS); images have no such cap."""
    classes = [f"c{index}" for index in range(100_000)]
    source = open_task(experiment(classes=classes, size=MAX_SIZE, channels=3)).source
    assert isinstance(source, ImageSource)
    shape, outputs = source.declared_shape()  # type: ignore[misc]
    assert 32 * (shape[1] // 4) * (shape[2] // 4) * outputs > 5 * 10**10  # what would be allocated
    with pytest.raises(UsageError):
        check_task(experiment(classes=classes, size=MAX_SIZE, channels=3))


@pytest.mark.parametrize("classes", [
    [], ["only"], ["a", "a"], ["a", ""], ["a", 1], "benign,malignant", {"a": 1}, ["a", None], [["a"], "b"],
])
def test_odd_declared_classes_are_one_usage_error(classes: object) -> None:
    """Holds: empty, single, duplicate, empty-string, non-string classes, or not a list."""
    with pytest.raises(UsageError, match="task.classes"):
        check_task(experiment(classes=classes))


def test_path_tricks_in_class_names_open_nothing_outside_the_folder(tmp_path: Path) -> None:
    """Holds: class names are only compared with sub-folder names (never joined to a path),
    so '..', '.', 'a/../..' can never match and no file outside is read."""
    folder = site(tmp_path / "site")
    image(tmp_path / "secret.png")
    data = load_image_folder(folder, classes=["benign", "malignant", "..", ".", "../secret", "/etc"], size=8,
                             channels=3, seed=0, index=0)
    assert data.train_x.shape[0] + data.test_x.shape[0] == 8
    assert set(np.concatenate([data.train_y, data.test_y]).tolist()) == {0, 1}


# ------------------------------------------------------------ a deployed site's folder


def test_a_class_folder_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    """Holds: a linked class sub-folder (here to images outside the data-dir) is skipped."""
    folder = site(tmp_path / "site")
    for index in range(3):
        image(tmp_path / "outside" / f"{index}.png")
    (folder / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    data = load_image_folder(folder, classes=["benign", "malignant", "linked"], size=8, channels=3, seed=0, index=0)
    assert data.train_x.shape[0] + data.test_x.shape[0] == 8


def test_a_sub_folder_the_task_does_not_declare_is_one_error(tmp_path: Path) -> None:
    folder = site(tmp_path / "site")
    image(folder / "other" / "0.png")
    with pytest.raises(DataError, match="other"):
        load_image_folder(folder, classes=["benign", "malignant"], size=8, channels=3, seed=0, index=0)


def test_a_fifo_named_like_an_image_is_skipped_not_read_for_ever(tmp_path: Path) -> None:
    folder = site(tmp_path / "site")
    os.mkfifo(folder / "benign" / "9.png")
    data = load_image_folder(folder, classes=["benign", "malignant"], size=8, channels=3, seed=0, index=0)
    assert data.train_x.shape[0] + data.test_x.shape[0] == 8


@pytest.mark.parametrize("content", [b"not an image", b"%!PS-Adobe-3.0 EPSF-3.0\n", b""])
def test_a_file_that_is_no_png_or_jpeg_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    folder = site(tmp_path / "site")
    (folder / "benign" / "bad.png").write_bytes(content)
    with pytest.raises(DataError, match="bad.png"):
        load_image_folder(folder, classes=["benign", "malignant"], size=8, channels=3, seed=0, index=0)


def test_a_decompression_bomb_is_refused_by_its_header(tmp_path: Path) -> None:
    """Holds: a small PNG declaring 10,000 x 10,000 pixels is refused before decoding."""
    folder = site(tmp_path / "site")
    Image.new("L", (10_000, 10_000)).save(folder / "benign" / "bomb.png", optimize=True)
    assert (folder / "benign" / "bomb.png").stat().st_size < 1 << 20
    with pytest.raises(DataError, match="bomb.png"):
        load_image_folder(folder, classes=["benign", "malignant"], size=8, channels=3, seed=0, index=0)
