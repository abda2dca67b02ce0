"""Privacy modes by name: `privacy.mode` in a config (configs/privacy/<name>.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_chain.errors import UsageError
from fl_chain.privacy.mode import PrivacyMode
from fl_chain.privacy.sealed import Sealed

MODES: dict[str, PrivacyMode] = {mode.name: mode for mode in (Sealed(),)}
SEALED = MODES["sealed"]


def mode_named(name: object) -> PrivacyMode:
    if not isinstance(name, str) or name not in MODES:
        raise UsageError(f"unknown privacy mode {name!r}; choose one of {tuple(MODES)}")
    return MODES[name]


def mode_of(experiment: Mapping[str, Any]) -> PrivacyMode:
    """The mode an experiment names (whose hash the federation's task hash is)."""
    privacy = experiment.get("privacy")
    if not isinstance(privacy, Mapping) or "mode" not in privacy:
        raise UsageError(f"the experiment names no privacy mode (privacy.mode, one of {tuple(MODES)})")
    return mode_named(privacy["mode"])
