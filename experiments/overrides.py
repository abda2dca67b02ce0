"""Hydra overrides checked before anything runs: unknown keys, group options, value types.

Hydra reports a mistyped key as a multi-line composition error and does not notice a
mistyped value at all (`rounds=abc` stays a string until something compares it, deep in
a run). `flchain run` and `flchain bench` compose every job's config here first, so a
bad override is one `UsageError` that names the key, and no job has started.

Types are judged against the defaults: the same config composed with the same group
choices but no value overrides. A key whose default is an integer takes integers, a
float takes any number, and so on; a key whose default is null or `???` takes anything.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from fl_chain.errors import UsageError

MISSING = "???"
# what a default's type asks of a value (bool before int: a bool is an int to isinstance)
KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
         dict: "a mapping"}


def compose_jobs(config_dir: Path, config_name: str, overrides: Sequence[str], *,
                 multirun: bool | None = None) -> list[DictConfig]:
    """The config of every job `overrides` describe, each checked; the first problem is a UsageError.

    `multirun` is True when `-m` was given (one job per sweep point), False when it was
    not, None when the command has no sweeps; a sweep override without `-m` is refused
    with the advice that fits.
    """
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parsed = [_parse(loader, text) for text in overrides]
        for override in parsed:
            _check_group_option(loader, override)
        defaults: dict[tuple[str, ...], Any] = {}
        return [_compose(loader, config_name, job, defaults) for job in _sweep(parsed, multirun)]


def _parse(loader: ConfigLoader, text: str) -> Override:
    try:
        return OverridesParser.create(config_loader=loader).parse_override(text)
    except HydraException as error:
        raise UsageError(f"cannot parse the override {text!r}: {_first_line(error)}") from None


def _is_group(loader: ConfigLoader, name: str) -> bool:
    parent, _, leaf = name.rpartition("/")
    return leaf in loader.list_groups(parent)


def _check_group_option(loader: ConfigLoader, override: Override) -> None:
    """`task=nope` names the choices; the sweep values of `task=a,b` are checked one by one."""
    group = override.key_or_group
    if override.is_delete() or not _is_group(loader, group):
        return
    choices = loader.get_group_options(group, results_filter=ObjectType.CONFIG)
    options = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    for option in options:
        if isinstance(option, str) and option not in choices:
            raise UsageError(f"{group}={option}: choose one of {', '.join(choices)}")


def _sweep(parsed: list[Override], multirun: bool | None) -> list[tuple[str, ...]]:
    """The override list of every job: the cartesian product of the sweeps, as Hydra's basic sweeper runs them."""
    axes: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            axes.append([override.input_line])
        elif not multirun:
            advice = "add -m to run one job per value, or " if multirun is False else ""
            raise UsageError(f"{override.input_line} is a sweep: {advice}write "
                             f"{override.get_key_element()}=[...] for a list")
        else:
            try:
                axes.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
            except HydraException as error:
                raise UsageError(f"cannot sweep {override.input_line}: {_first_line(error)}") from None
    return list(itertools.product(*axes))


def _compose(loader: ConfigLoader, config_name: str, overrides: Sequence[str],
             defaults: dict[tuple[str, ...], Any]) -> DictConfig:
    """The job's config (without the `hydra` node), after its keys and value types are checked.

    `defaults` caches the default values per set of group choices, across the jobs of a sweep.
    """
    try:
        config = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    except ConfigCompositionException as error:
        cause = error.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
            raise UsageError(_unknown_key(loader, config_name, overrides, str(cause.full_key))) from None
        raise UsageError(_first_line(error)) from None
    except (HydraException, OmegaConfBaseException) as error:
        raise UsageError(_first_line(error)) from None
    choices = tuple(f"{group}={option}" for group, option in config.hydra.runtime.choices.items()
                    if not group.startswith("hydra/") and isinstance(option, str))
    with open_dict(config):
        del config["hydra"]
    if choices not in defaults:
        defaults[choices] = _plain(compose(config_name=config_name, overrides=list(choices)))
    check_types(_plain(config), defaults[choices], "")
    return config


def _unknown_key(loader: ConfigLoader, config_name: str, overrides: Sequence[str], key: str) -> str:
    """Names the unknown key and, for a near miss, the valid key it was probably meant to be."""
    groups = [text for text in overrides if "=" in text and _is_group(loader, text.split("=", 1)[0])]
    known = compose(config_name=config_name, overrides=groups, return_hydra_config=key.startswith("hydra."))
    parent, _, leaf = key.rpartition(".")
    siblings = [name.rpartition(".")[2] for name in _dotted_keys(OmegaConf.to_container(known, resolve=False), "")
                if name.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, siblings, n=1)
    if close:
        meant = f"{parent}.{close[0]}" if parent else close[0]
        return f"unknown config key {key!r} (did you mean {meant!r}?)"
    if parent and siblings:
        return f"unknown config key {key!r} ({parent} has: {', '.join(siblings)})"
    return f"unknown config key {key!r}"


def _dotted_keys(node: Any, prefix: str) -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for name, child in node.items():
        key = f"{prefix}{name}"
        keys += [key, *_dotted_keys(child, key + ".")]
    return keys


def _plain(config: DictConfig) -> Any:
    """The config as plain data with interpolations resolved; `???` stays as it is."""
    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        raise UsageError(f"cannot resolve {key}: {_first_line(error)}" if key else _first_line(error)) from None


def check_types(value: Any, default: Any, key: str) -> None:
    """Raises when `value` is not of the kind of `default` (containers are walked key by key)."""
    if default is None or default == MISSING or value == MISSING:
        return
    kind = _kind(default)
    if not _fits(value, kind):
        raise UsageError(f"{key} must be {KINDS[kind]}, got {_show(value)}")
    if kind is dict:
        for name, child in value.items():
            if name in default:
                check_types(child, default[name], f"{key}.{name}" if key else str(name))
    elif kind is list and _scalar_elements(default):
        for index, element in enumerate(value):
            check_types(element, default[0], f"{key}[{index}]")


def _kind(value: Any) -> type:
    return next((kind for kind in KINDS if isinstance(value, kind)), object)


def _scalar_elements(items: list[Any]) -> bool:
    """Whether a default list holds scalars of one kind (e.g. [1, 5, 10]), so its elements have a type."""
    kinds = {_kind(item) for item in items}
    return len(kinds) == 1 and not kinds & {list, dict}


def _fits(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
