"""Code a config names (a task class, a model class, a Flower task module), imported and
called with arguments filled by name, each failure one line that says what is wrong.

Importing is running someone's code: only names the user's own config or command line
gives are imported (a published run's are refused unless the user repeats them,
experiments/published.py).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from fl_chain.errors import UsageError


def import_module(name: object, what: str) -> ModuleType:
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(f"{what} must be a dotted module name such as my_pkg.task, got {name!r}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as missing:
        raise UsageError(f"{what} {name}: no module named {missing.name!r} (is its package installed or on "
                         "PYTHONPATH?)") from None
    except Exception as error:  # noqa: BLE001 - the module's own failure, reported in one line
        raise UsageError(f"{what} {name} failed to import: {type(error).__name__}: {error}") from None


def import_named(path: object, what: str) -> Any:
    """`pkg.module.Name`, as Hydra's `_target_` spells it."""
    if not isinstance(path, str) or "." not in path:
        raise UsageError(f"{what} must be a dotted name such as my_pkg.MyTask, got {path!r}")
    module_name, _, attribute = path.rpartition(".")
    found = getattr(import_module(module_name, what), attribute, None)
    if found is None:
        raise UsageError(f"{what} {path}: {module_name} has no {attribute!r}")
    return found


def arguments_for(function: Callable[..., Any], given: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The keyword arguments to call `function` with: each of its parameters that `given`
    names. One that is required and not given, or a signature that cannot be read or
    filled by name, is refused in one line before anything runs."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        raise UsageError(f"{what}: its signature cannot be read") from None
    missing = [p.name for p in parameters if p.name not in given and p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.POSITIONAL_ONLY for p in parameters):
        raise UsageError(f"{what}: positional-only parameters cannot be filled by name")
    if missing:
        raise UsageError(f"{what} needs {', '.join(missing)}, which the config does not give (task.{missing[0]}=...)")
    takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return {name: value for name, value in given.items() if takes_all or name in {p.name for p in parameters}}
