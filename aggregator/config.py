"""The experiment config: composed from configs/ with Hydra, resolved to plain data and
checked, one clear line per problem, before anything touches a chain.

Kept apart from the launcher so that a mistyped value is reported without loading Flower,
Ray or PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fl_chain.chain.operator import RpcSettings
from fl_chain.consortium import ADMISSION_CAPS
from fl_chain.drills import check_drill_task, parse_drills
from fl_chain.errors import UsageError
from fl_chain.privacy import MODES
from fl_chain.rules import rule_named
from fl_chain.storage.backends import BACKENDS as STORE_BACKENDS

CHAIN_BACKENDS = ("embedded", "anvil", "rpc")
PER_PARTICIPANT = {"csv": "files", "images": "dirs"}  # tasks whose participants are the paths they list
RUN_OWNED_CHAINS = ("embedded", "anvil")  # development chains a run starts for itself


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# the largest values fl-chain accepts: a config (perhaps someone else's, re-run) cannot ask
# for a run that never ends or a number the contract cannot hold
LIMITS = {"seed": 2**32 - 1, "num_participants": 100_000, "rounds": 100_000, "num_validators": 100_000,
          "quorum": 100_000, "attestation_threshold": 100_000, "committee_size": 100_000,
          "round_duration": 30 * 86_400, "reply_timeout": 86_400, "max_examples": 2**64 - 1,
          "max_update_norm": 1e300, "commit_grace": 30 * 86_400}


def compose_experiment(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The experiment configs/config.yaml describes with Hydra `overrides`, outside `flchain run`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return resolve_config(compose(config_name="config", overrides=task_class_overrides(overrides)))


def task_class_overrides(overrides: Sequence[str]) -> list[str]:
    """Hydra's spelling of what a user means by `task._target_=my_pkg.MyTask task.steps=20`:
    the `custom` task group (nothing but `_target_`) unless a task group is chosen, and
    each `task.KEY=VALUE` adding its key (`++task.KEY=VALUE`); so too for a named model
    (`task.model._target_=my_pkg.Net task.model.hidden=64`)."""
    keys = [override.split("=", 1)[0] for override in overrides]
    adds_task_keys = "task._target_" in keys or "task.model._target_" in keys
    if not adds_task_keys:
        return list(overrides)
    rewritten = [f"++{override}" if key.startswith("task.") else override for override, key in zip(overrides, keys)]
    if "task._target_" in keys and "task" not in keys:
        rewritten.insert(0, "task=custom")
    return rewritten


def resolve_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed Hydra config as plain data, with what follows from it filled in."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as missing:
        raise UsageError(f"the config needs a value for {missing.full_key} (e.g. {missing.full_key}=...)") from None
    assert isinstance(config, dict)
    key = PER_PARTICIPANT.get(config["task"].get("name"))
    if key is not None and "_target_" not in config["task"]:
        paths = config["task"][key]
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise UsageError(f"task.{key} must be a list of paths, one per participant, e.g. task.{key}=[a,b], "
                             f"got {paths!r}")
        if paths:  # none: a deployment, whose sites each name their own (a SuperNode's data-file or data-dir)
            config["num_participants"] = len(paths)
    return config


def _check_data_files(config: dict[str, Any]) -> None:
    """A task's own files come first: a missing one is the root cause of whatever else
    (the participant count follows the files) would look wrong."""
    key = PER_PARTICIPANT.get(config["task"].get("name"))
    if key is None or "_target_" in config["task"]:
        return
    folders = key == "dirs"
    for path in map(Path, config["task"][key]):
        if not path.exists():
            raise UsageError(f"task.{key}: {path} does not exist")
        if path.is_dir() != folders:
            raise UsageError(f"task.{key}: {path} is {'not a directory' if folders else 'a directory, not a file'}")


def validate(config: dict[str, Any], *, deployment: bool = False) -> None:
    """Checks the config before anything touches a chain; each problem is one clear line.
    `deployment`: the federation's sites are real organizations, each with its own data."""
    _check_data_files(config)
    for key in ("seed", "num_participants", "rounds", "quorum", "num_validators", "attestation_threshold",
                "round_duration", "fraction_train", "reply_timeout", "committee_size", "max_examples",
                "max_update_norm", "commit_grace"):
        fractional = key in ("fraction_train", "reply_timeout", "max_update_norm")
        if isinstance(config[key], bool) or not isinstance(config[key], (int, float) if fractional else int):
            raise UsageError(f"{key} must be {'a number' if fractional else 'an integer'}, got {config[key]!r}")
    for key, most in LIMITS.items():
        if config[key] > most:
            raise UsageError(f"{key} {config[key]} is more than fl-chain runs ({most})")
    participants = config["num_participants"]
    checks = [
        (participants >= 1, f"num_participants must be at least 1, got {participants}"),
        (config["rounds"] >= 1, f"rounds must be at least 1, got {config['rounds']}"),
        (1 <= config["quorum"] <= participants,
         f"quorum {config['quorum']} must be between 1 and num_participants ({participants})"),
        (1 <= config["num_validators"] <= participants,
         f"num_validators {config['num_validators']} must be between 1 and num_participants ({participants})"),
        (1 <= config["attestation_threshold"] <= config["num_validators"],
         f"attestation_threshold {config['attestation_threshold']} must be between 1 and "
         f"num_validators ({config['num_validators']})"),
        (config["committee_size"] == 0 or config["attestation_threshold"] <= config["committee_size"]
         <= config["num_validators"],
         f"committee_size {config['committee_size']} must be 0 (every validator) or between attestation_threshold "
         f"({config['attestation_threshold']}) and num_validators ({config['num_validators']})"),
        (1 <= config["max_examples"] < 2**64, f"max_examples must be at least 1, got {config['max_examples']}"),
        (config.get("admission_caps", "own") in ADMISSION_CAPS,
         f"admission_caps must be one of {', '.join(ADMISSION_CAPS)}, got {config.get('admission_caps')!r}"),
        (0 < config["max_update_norm"] < float("inf"),
         f"max_update_norm must be a positive number, got {config['max_update_norm']}"),
        (0 < config["fraction_train"] <= 1, f"fraction_train must be in (0, 1], got {config['fraction_train']}"),
        (config["seed"] >= 0, f"seed must be at least 0, got {config['seed']}"),
        (config["round_duration"] >= 1, f"round_duration must be at least 1 second, got {config['round_duration']}"),
        (0 <= config["commit_grace"] < config["round_duration"],
         f"commit_grace {config['commit_grace']} must be at least 0 and shorter than round_duration "
         f"({config['round_duration']})"),
        (config["reply_timeout"] > 0, f"reply_timeout must be positive, got {config['reply_timeout']}"),
        (0 <= float(config["strategy"]["proximal_mu"]) <= 1e6,
         f"strategy.proximal_mu must be from 0 to 1e6, got {config['strategy']['proximal_mu']}"),
        (isinstance(config.get("max_attempts", 1), int) and 1 <= config.get("max_attempts", 1) <= 100,
         f"max_attempts must be an integer from 1 to 100, got {config.get('max_attempts')}"),
        (isinstance(config["chain"].get("chain_id"), (int, type(None))) and 0 < (config["chain"].get("chain_id") or 1)
         < 2**63, f"chain.chain_id must be a positive integer below 2**63, got {config['chain'].get('chain_id')!r}"),
        (config["chain"]["backend"] in CHAIN_BACKENDS,
         f"unknown chain backend {config['chain']['backend']!r}; choose one of {CHAIN_BACKENDS}"),
        (config["storage"]["backend"] in STORE_BACKENDS,
         f"unknown storage backend {config['storage']['backend']!r}; choose one of {STORE_BACKENDS}"),
        (config["privacy"]["mode"] in MODES,
         f"unknown privacy mode privacy.mode={config['privacy']['mode']!r}; choose one of {tuple(MODES)}"),
    ]
    for holds, message in checks:
        if not holds:
            raise UsageError(message)
    rule_named(config["strategy"]).check(config["quorum"])  # its parameters, against the smallest round
    drills = parse_drills(config, deployment=deployment)
    from fl_chain.tasks.catalog import check_task  # the tasks' code: only once a config is checked

    check_task(config)  # its name or class, and its own settings (epochs, batch size, learning rate, ...)
    check_drill_task(drills, config)
    if config["chain"]["backend"] == "rpc":
        RpcSettings.from_config(config["chain"])
