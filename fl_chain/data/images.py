"""The `images` task's data: a folder of images per participant, one sub-folder per class.

The layout is torchvision's ImageFolder convention: `site_a/benign/001.png`,
`site_a/malignant/002.jpg`, and so on. Every image (PNG or JPEG, by extension) is
decoded, converted to `channels` (1: grey, 3: RGB), resized to `size` x `size` and
scaled to [0, 1] by the fixed range 0..255, so no statistic of anyone's images has to be
shared. The class vocabulary is `task.classes` when the config declares it (a deployment,
where each site sees only its own folder, must: a sub-folder outside it is an error), and
otherwise the sorted union of every participant's sub-folder names; either way class
indices agree across participants. Only regular files are read; a file
that is not a PNG or JPEG image (by its content), or one larger than MAX_PIXELS before
resizing, is an error that names it; so are folders whose images would not fit in
MAX_LOADED_BYTES once decoded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.data.split import split_participant
from fl_chain.errors import DataError, UsageError

EXTENSIONS = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")  # decoded as nothing else: Pillow's other decoders (EPS runs Ghostscript) stay shut
MAX_LOADED_BYTES = 8 * 1024**3  # the decoded arrays of every participant together
MAX_PIXELS = 50_000_000  # beyond any scan a hospital would train a small CNN on: a decompression bomb
MAX_SIZE = 512
MAX_CLASSES = 1_000  # as many labels as a table may have (fl_chain/data/preprocessing.py)
MODES = {1: "L", 3: "RGB"}


def load_image_folders(dirs: Sequence[str | Path], *, size: int, channels: int, seed: int,
                       test_fraction: float = 0.2, classes: Sequence[str] | None = None) -> FederatedDataset:
    """One participant per folder, in the order given, each with a local train/test split."""
    if not dirs:
        raise UsageError("the images task needs at least one participant folder: task.dirs=[site_a,site_b]")
    check_image_settings(size, channels, classes)
    folders = [_folder(folder, "task.dirs") for folder in dirs]
    listed = [_class_files(folder) for folder in folders]
    _check_decoded_size(listed, size, channels)
    vocabulary = list(classes) if classes is not None else sorted({name for files in listed for name in files})
    if len(vocabulary) < 2:
        raise DataError(f"the image folders {', '.join(map(str, folders))} hold {len(vocabulary)} class "
                        "sub-folder(s); a classifier needs at least 2")
    participants = tuple(_split(folder, files, vocabulary, size, channels, seed, index, test_fraction)
                         for index, (folder, files) in enumerate(zip(folders, listed)))
    return FederatedDataset(task="images", participants=participants, num_classes=len(vocabulary),
                            input_shape=(channels, size, size), feature_names=(), class_names=tuple(vocabulary))


def load_image_folder(folder: str | Path, *, classes: Sequence[str], size: int, channels: int, seed: int,
                      index: int, test_fraction: float = 0.2) -> ParticipantData:
    """A deployed site's own folder as participant `index`, against the declared classes."""
    check_image_settings(size, channels, classes)
    path = _folder(folder, "data-dir")
    files = _class_files(path)
    _check_decoded_size([files], size, channels)
    return _split(path, files, list(classes), size, channels, seed, index, test_fraction)


def check_image_settings(size: object, channels: object, classes: Sequence[str] | None) -> None:
    if not (isinstance(size, int) and not isinstance(size, bool) and 4 <= size <= MAX_SIZE):
        raise UsageError(f"task.size must be an integer from 4 to {MAX_SIZE}, got {size!r}")
    if channels not in MODES:
        raise UsageError(f"task.channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if classes is not None and (not 2 <= len(classes) <= MAX_CLASSES or len(set(classes)) != len(classes)
                                or not all(isinstance(name, str) and name for name in classes)):
        shown = repr(list(classes)) if len(classes) <= 20 else f"{len(classes)} names"
        raise UsageError(f"task.classes must list from 2 to {MAX_CLASSES} distinct class names (the sub-folder "
                         f"names), got {shown}")


def _folder(folder: str | Path, key: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{key}: {path} is not a directory")
    return path


def _check_decoded_size(listed: Sequence[dict[str, list[Path]]], size: int, channels: int) -> None:
    count = sum(len(paths) for files in listed for paths in files.values())
    if count * channels * size * size * 4 > MAX_LOADED_BYTES:
        raise DataError(f"the image folders hold {count} images, {count * channels * size * size * 4 / 1024**3:.1f} GiB "
                        f"decoded at {size}x{size}x{channels}: more than {MAX_LOADED_BYTES // 1024**3} GiB; choose a "
                        "smaller task.size or fewer images")


def _split(folder: Path, files: dict[str, list[Path]], classes: list[str], size: int, channels: int, seed: int,
           index: int, test_fraction: float) -> ParticipantData:
    unknown = sorted(set(files) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class sub-folders {unknown} that task.classes {classes} does not name")
    paths = [(path, classes.index(name)) for name in sorted(files) for path in files[name]]
    x = np.stack([_pixels(path, size, channels) for path, _ in paths]) if paths else np.zeros((0, channels, size, size))
    y = np.array([label for _, label in paths], dtype=np.int64)
    return split_participant(folder.name or str(folder), x, y, index=index, test_fraction=test_fraction, seed=seed)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Each class sub-folder's image files, sorted by name (symbolic links are skipped)."""
    found: dict[str, list[Path]] = {}
    for sub in sorted(folder.iterdir()):
        if sub.is_symlink() or not sub.is_dir():
            continue
        images = sorted(path for path in sub.iterdir()
                        if path.suffix.lower() in EXTENSIONS and not path.is_symlink() and path.is_file())
        if images:
            found[sub.name] = images
    if not found:
        raise DataError(f"{folder} has no class sub-folders with PNG or JPEG images (expected {folder}/<class>/*.png)")
    return found


def _pixels(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as float32 (channels, size, size) in [0, 1]."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:  # by content, whatever the name says
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(f"{path} is {image.width}x{image.height} pixels, more than {MAX_PIXELS}")
                pixels = np.asarray(image.convert(MODES[channels]).resize((size, size), Image.BILINEAR))
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise DataError(f"{path} is not an image fl-chain can read: {error}") from None
    scaled = pixels.astype(np.float32) / 255.0
    return scaled.reshape(size, size, channels).transpose(2, 0, 1).copy()
