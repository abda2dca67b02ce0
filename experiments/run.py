"""`flchain run key=value ...`: the Hydra entry point for one experiment (or a `-m` sweep).

Composes configs/ with the overrides, writes the resolved config into the run directory
(Hydra's `hydra.run.dir`, default runs/<timestamp>), and runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fl_chain.errors import FlChainError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def experiment(cfg: DictConfig) -> float | None:
    from aggregator.launch import resolve_config, run_experiment  # Flower and torch: only when running

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = resolve_config(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        summary = run_experiment(config, run_dir)
    except FlChainError as error:
        print(f"flchain: error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    return summary["final"]["accuracy"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="run an experiment (Hydra: key=value overrides, -m for sweeps)",
        description="Run a federated experiment. Arguments are Hydra overrides, e.g. "
                    "`flchain run task=digits num_participants=10 rounds=20`, or `-m seed=0,1,2`.",
        add_help=False,
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides and flags")
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    sys.argv = ["flchain run", *args.overrides]
    experiment()
    return 0
