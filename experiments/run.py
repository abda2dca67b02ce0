"""`flchain run key=value ...`: the Hydra entry point for one experiment (or a `-m` sweep).

Composes configs/ with the overrides, writes the resolved config into the run directory
(Hydra's `hydra.run.dir`, default runs/<timestamp>), and runs it. Every job's config (each
sweep point under `-m`) is composed and validated first, so a mistyped key or value is one
clear error before any job starts, not a Hydra report or a failure halfway through a sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.overrides import compose_jobs
from fl_chain.errors import FlChainError, UsageError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def experiment(cfg: DictConfig) -> float | None:
    from aggregator.config import resolve_config
    from experiments.harness import run_experiment  # Flower and torch: only when running
    from experiments.simulation import simulate
    from fl_chain.tasks.catalog import open_task

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = resolve_config(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        summary = run_experiment(config, run_dir, simulate)
    except FlChainError as error:
        print(f"flchain: error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    return summary["final"].get(open_task(config).headline)  # what a Hydra sweeper would optimize


# Hydra's own command line (overrides, -m, --cfg, --help, ...), parsed here so that its flags
# may stand anywhere among the overrides and the jobs can be checked before Hydra starts
HYDRA_ARGUMENTS = get_args_parser()
EXCLUSIVE_MODES = ("run", "multirun", "cfg", "info", "shell_completion")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="run an experiment (Hydra: key=value overrides, -m for sweeps)",
        description="Run a federated experiment. Arguments are Hydra overrides, e.g. "
                    "`flchain run task=digits num_participants=10 rounds=20`, or `-m seed=0,1,2`.",
        parents=[HYDRA_ARGUMENTS],
        add_help=False,
    )
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    modes = [mode for mode in EXCLUSIVE_MODES if getattr(args, mode)]
    if len(modes) > 1:
        raise UsageError("only one of " + ", ".join(f"--{mode.replace('_', '-')}" for mode in modes) + " may be given")
    from aggregator.config import task_class_overrides

    args.overrides = task_class_overrides(args.overrides)
    if not (args.help or args.hydra_help or args.shell_completion or args.experimental_rerun
            or args.config_path or args.config_dir):  # Hydra's own tools, or a config tree other than configs/
        _check_jobs(args.overrides, config_name=args.config_name or "config", multirun=args.multirun,
                   validate_values=not (args.cfg or args.info))
    sys.argv = ["flchain run", *_hydra_command_line(args)]
    experiment()
    return 0


def _check_jobs(overrides: list[str], *, config_name: str = "config", multirun: bool = False,
               validate_values: bool = True) -> None:
    """Composes every job and checks its keys, types and (unless only printing) values."""
    jobs = compose_jobs(CONFIG_DIR, config_name, overrides, multirun=multirun)
    if validate_values:
        from aggregator.config import resolve_config, validate

        for job in jobs:
            validate(resolve_config(job))


def _hydra_command_line(args: argparse.Namespace) -> list[str]:
    """`args` as Hydra's parser reads them: the overrides, then every flag that was given."""
    command_line = list(args.overrides)
    for action in HYDRA_ARGUMENTS._actions:
        value = getattr(args, action.dest, action.default)
        if action.dest != "overrides" and value != action.default:
            command_line += [action.option_strings[0]] + ([] if action.nargs == 0 else [value])
    return command_line
