"""`flchain bench`: the benchmark suites, each one command, configured with Hydra.

    flchain bench SUITE [key=value ...] [--out DIR]   one suite; results in experiments/results/SUITE/
    flchain bench SUITE [key=value ...] --quick       the suite's own reduced variant (robustness)
    flchain bench --quick [--json FILE]               a reduced check of the headline figures (< 5 min)

Suites: gas, throughput, scale, overhead, accuracy, robustness (configs/bench/SUITE.yaml).
Each writes results.md (tables and the environment), results.json and its plots.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.overrides import compose_jobs
from fl_chain.errors import UsageError

SUITES = ("gas", "throughput", "scale", "overhead", "accuracy", "robustness")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "bench"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_KEYS = ("overhead_ratio_embedded", "overhead_ratio_anvil", "gas_per_commitment_100", "envelope_mb_s",
              "aggregate_mb_s", "memcpy_mb_s")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bench", help="run a benchmark suite and write its results",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("suite", nargs="?", choices=SUITES, help="the suite to run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/bench/SUITE.yaml")
    parser.add_argument("--quick", action="store_true",
                        help="alone: reduced gas, throughput and overhead (< 5 min); with a suite: its quick variant")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write results")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the headline figures as JSON")
    parser.set_defaults(handler=handle)


def suite_config(suite: str, overrides: list[str], quick: bool = False) -> dict[str, Any]:
    """configs/bench/SUITE.yaml with `overrides`; a mistyped key or value is a UsageError.
    `quick` narrows it to its `quick` block: named entries of a mapping, or new values."""
    [job] = compose_jobs(CONFIG_DIR, suite, overrides)
    config = OmegaConf.to_container(job, resolve=True)
    assert isinstance(config, dict)
    narrowed = config.pop("quick", None)
    if not quick:
        return config
    if not isinstance(narrowed, dict):
        raise UsageError(f"the {suite} suite has no quick variant; `flchain bench --quick` alone runs the reduced "
                         "gas, throughput and overhead suites")
    for key, value in narrowed.items():
        config[key] = {name: config[key][name] for name in value} if isinstance(config.get(key), dict) else value
    return config


def run_suite(suite: str, overrides: list[str], out_dir: Path, quick: bool = False) -> dict[str, Any]:
    module = importlib.import_module(f"experiments.suites.{suite}")
    return module.run(suite_config(suite, overrides, quick), out_dir)


def handle(args: argparse.Namespace) -> int:
    if not (args.quick or args.suite):
        raise UsageError("name one suite (" + ", ".join(SUITES) + "), or pass --quick")
    if args.quick and not args.suite:
        figures = _quick(args.out)
    else:
        out_dir = args.out or RESULTS_DIR / args.suite / ("quick" if args.quick else "")
        figures = run_suite(args.suite, args.overrides, out_dir, args.quick)
        print(f"results written to {out_dir}/results.md", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def _quick(out: Path | None) -> dict[str, Any]:
    """The headline figures from reduced suites: gas exact, timings from short runs."""
    with tempfile.TemporaryDirectory(prefix="fl-chain-bench-") as scratch:
        base = out or Path(scratch)
        gas = run_suite("gas", ["batch_sizes=[100]"], base / "gas")
        throughput = run_suite("throughput", ["sizes_mb=[1,10]", "repeats=2"], base / "throughput")
        overhead = run_suite("overhead", ["rounds=4"], base / "overhead")
    figures = {
        "overhead_ratio_embedded": round(overhead["embedded"]["ratio"], 3),
        "overhead_ratio_anvil": round(overhead["anvil"]["ratio"], 3),
        "gas_per_commitment_100": gas["gas_per_commitment_100"],
        "envelope_mb_s": throughput["envelope_mb_s"],
        "aggregate_mb_s": throughput["aggregate_mb_s"],
        "memcpy_mb_s": throughput["memcpy_mb_s"],
    }
    print("\n".join(f"{key}: {figures[key]}" for key in QUICK_KEYS))
    return figures
