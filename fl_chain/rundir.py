"""Opening a run directory for the commands that take one (verify, reproduce, resume).

A user who mistypes the path, or names the runs/ folder instead of one run in it, gets
one line that says which, instead of a missing-file error from deep inside a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fl_chain.errors import UsageError

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


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved experiment config a run wrote (config.yaml), as plain data."""
    path = run_dir / "config.yaml"
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # noqa: BLE001 - any YAML or OmegaConf failure means the same to the user
        raise UsageError(f"{path} is not a readable config: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a config mapping")
    return config
