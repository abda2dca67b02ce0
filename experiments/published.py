"""A run directory's config, re-run here: the "what" from its file, the "where and who" from you.

`flchain reproduce` and `flchain resume` read a run's config.yaml as data
(fl_chain.rundir.read_run_config: nothing resolved, interpolations refused). From it they
take only what the run trains and how: task, data split, strategy, privacy mode, seed,
rounds, quorum and the other rules, each checked against the keys and types fl-chain
knows. Where it runs and who pays never come from the file: a chain the run starts
itself (embedded, or its own anvil, by chain id) may be taken from it, since that
reaches nothing outside the process; anything else (a node's URL, a keystore, a kubo
daemon, a store directory, data file paths) must be named on the user's own command
line, as Hydra overrides of `chain`, `storage`, `task.files` or `task.dirs`. A task that is
code (`task._target_`, `task.module`, `task.model._target_`) is imported only when the
user repeats its name on the command line: importing a module runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggregator.config import PER_PARTICIPANT, RUN_OWNED_CHAINS, compose_experiment, task_class_overrides
from experiments.overrides import check_types, compose_jobs
from fl_chain.chain.federation import experiment_of
from fl_chain.errors import UsageError, printable
from fl_chain.rundir import read_run_config
from fl_chain.task import named_code

WHERE_OVERRIDES = ("chain", "storage", "task.files", "task.dirs")
GROUP_KEYS = {"task": "name", "partition": "scheme", "strategy": "name", "privacy": "mode"}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_from_run(run_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The config to re-run `run_dir` with: its experiment, and where it runs from `overrides`."""
    published = read_run_config(run_dir)
    what = experiment_of(published)
    code = named_code(what.get("task"))
    given = dict(override.lstrip("+~").split("=", 1) for override in overrides if "=" in override)
    for key, value in code.items():
        if given.get(key) != value:
            keys = ", ".join(printable(str(name), 40) for name in what["task"])
            raise UsageError(f"{run_dir} trains with code its config names ({key}={printable(value)}): importing it "
                             f"runs it, so fl-chain does so only on your word: repeat {key}={printable(value)} to "
                             f"run it (it is given the published task keys {keys})")
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in code and not any(key == allowed or key.startswith(allowed + ".") for allowed in WHERE_OVERRIDES):
            raise UsageError(f"{override!r}: the experiment is taken from {run_dir}; only where it runs may be given "
                             f"here ({', '.join(f'{k}=...' for k in WHERE_OVERRIDES)})")
    choices = [f"{group}={what[group][key]}" for group, key in GROUP_KEYS.items()
               if isinstance(what.get(group), dict) and isinstance(what[group].get(key), str)]
    taken_where = _run_owned_where(published, overrides)
    compose_jobs(CONFIG_DIR, "config", task_class_overrides([*choices, *taken_where, *overrides]))  # each checked
    defaults = compose_experiment([*choices, *taken_where, *overrides])
    _check_known(what, defaults, run_dir, own_keys=bool(code.keys() - {"task.model._target_"}))
    check_types(what, experiment_of(defaults), "")
    config = {**defaults, **what}
    paths = PER_PARTICIPANT.get(config["task"].get("name"))
    if paths is not None and "_target_" not in config["task"]:
        if f"task.{paths}" not in given:
            raise UsageError(f"{run_dir} trained on its participants' own data; name your copies of it yourself: "
                             f"task.{paths}=[...]: paths in someone else's config are never opened")
        config["task"] = {**config["task"], paths: defaults["task"][paths]}
        config["num_participants"] = len(config["task"][paths])
    return config


def stored_elsewhere(run_dir: Path, overrides: Sequence[str]) -> None:
    """A run whose blobs live outside its directory (a kubo daemon) is resumed only when
    the user names that store again: its address in the file is not followed."""
    storage = read_run_config(run_dir).get("storage")
    backend = storage.get("backend") if isinstance(storage, dict) else None
    named = any(o.split("=", 1)[0].lstrip("+~").split(".")[0] == "storage" for o in overrides)
    if backend != "local" and not named:
        raise UsageError(f"{run_dir} kept its blobs in storage backend {printable(backend)!r}: name that store "
                         "yourself (e.g. storage=ipfs storage.api=/ip4/127.0.0.1/tcp/5001)")


def _run_owned_where(published: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """The published chain, if it is one the run starts itself and the user names none;
    the storage stays the default (the new run's own directory) unless the user says."""
    if any(o.split("=", 1)[0].lstrip("+~").split(".")[0] == "chain" for o in overrides):
        return []
    chain = published.get("chain")
    backend = chain.get("backend") if isinstance(chain, dict) else None
    if backend not in RUN_OWNED_CHAINS:
        raise UsageError(f"the run ran on chain backend {printable(backend)!r}, a node this command will not "
                         "reach on a file's word: name one yourself (chain=embedded, chain=anvil, or "
                         "chain=rpc chain.url=... chain.keystore=...)")
    chain_id = chain.get("chain_id")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 1:
        raise UsageError(f"the run's chain id {printable(chain_id)!r} is not a positive integer")
    return [f"chain={backend}", f"chain.chain_id={chain_id}"]


def _check_known(what: dict[str, Any], defaults: dict[str, Any], run_dir: Path, own_keys: bool) -> None:
    """Every key the published config sets must be one fl-chain has (a typo or a foreign
    key is refused, not silently carried into the task hash); keys it lacks (an older
    fl-chain's run) take their defaults. `own_keys`: the task is code the user named, and
    its keys are that code's."""
    known = experiment_of(defaults)
    for key, value in what.items():
        if key not in known:
            raise UsageError(f"{run_dir}/config.yaml sets {printable(key)!r}, which is not an fl-chain config key")
        if key == "task" and own_keys:
            continue
        if isinstance(value, dict) and isinstance(known[key], dict):
            for name in value:
                if name not in known[key]:
                    raise UsageError(f"{run_dir}/config.yaml sets {key}.{printable(name)}, which the {key} "
                                     "group does not have")
