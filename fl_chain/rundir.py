"""Opening a run directory for the commands that take one (verify, reproduce, resume).

A user who mistypes the path, or names the runs/ folder instead of one run in it, gets
one line that says which, instead of a missing-file error from deep inside a command.

A run directory may come from anyone, so its files are data: its config.yaml is read as
plain YAML (no OmegaConf, so nothing is resolved: a `${oc.env:...}` could otherwise read
the user's environment), with aliases refused (a few lines could expand to gigabytes)
and any interpolation refused by name. What is *done* with a published config is the
caller's to restrict (experiments/published.py takes only what a run trains, never where
it runs or who pays).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fl_chain.errors import UsageError, printable

# every run writes these first (config.yaml; federation.json as soon as its federation exists)
RUN_MARKERS = ("config.yaml", "federation.json")


def open_run_dir(path: Path, needs: Sequence[str] = ("config.yaml",)) -> Path:
    """`path` if it is a run directory holding every entry in `needs`, else a UsageError.

    A directory that holds some of a run's files but not `needs` is named as an incomplete
    run (stopped early, or copied in part); any other as not a run directory at all.
    """
    if not path.exists():
        raise UsageError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise UsageError(f"{path} is not an fl-chain run directory (it is a file)")
    missing = next((name for name in needs if not (path / name).exists()), None)
    if missing is None:
        return path
    if any((path / marker).is_file() for marker in RUN_MARKERS):
        raise UsageError(f"{path} is an incomplete fl-chain run directory (no {missing})")
    raise UsageError(f"{path} is not an fl-chain run directory (no {missing})")


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 16


class _PlainLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - yaml's own signature
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("it uses an alias (*name): run configs have none")
        return super().compose_node(parent, index)


def check_regular(path: Path) -> None:
    """A file of someone's run directory is read only if it is a regular file itself: a link
    could point at the user's secrets (then copied into a report) or at a device that never
    ends (/dev/zero)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
        raise UsageError(f"{path} is {'a link' if stat.S_ISLNK(mode) else 'not a regular file'}: a run directory's "
                         "files are read only as they are")


def read_run_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of a run directory, at most `limit` of them."""
    check_regular(path)
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path} is larger than such a file can be ({limit} bytes)")
    return data


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The experiment config a run wrote (config.yaml), as plain data, nothing resolved."""
    path = run_dir / "config.yaml"
    try:
        text = read_run_file(path, MAX_CONFIG_BYTES).decode("utf-8")
        config = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as error:
        reason = "it nests too deeply" if isinstance(error, RecursionError) else " ".join(str(error).split())
        raise UsageError(f"{path} is not a readable config: {printable(reason)}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a config mapping")
    _check_plain(config, path, "", 0)
    return config


def _check_plain(node: Any, path: Path, key: str, depth: int) -> None:
    """Only what a config holds: mappings with text keys, lists, text, numbers, booleans,
    nulls, a few levels deep; no interpolation, no YAML type of another kind."""
    if depth > MAX_CONFIG_DEPTH:
        raise UsageError(f"{path}: {key} nests more than {MAX_CONFIG_DEPTH} levels: not a run config")
    if isinstance(node, dict):
        for name, child in node.items():
            if not isinstance(name, str):
                raise UsageError(f"{path}: {printable(key or 'the top level')} has a key {printable(name)!r} that is "
                                 "not text")
            _check_plain(child, path, f"{key}.{name}" if key else name, depth + 1)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_plain(child, path, f"{key}[{index}]", depth + 1)
    elif isinstance(node, str) and "${" in node:
        raise UsageError(f"{path}: {key} holds an interpolation ({printable(node)}); a run's files are read as "
                         "data and never resolved: refused")
    elif not isinstance(node, (str, int, float, bool, type(None))):
        raise UsageError(f"{path}: {key} holds a {type(node).__name__}, which no run config has")
