"""`flchain reproduce RUN_DIR`: re-run a run from its own config.yaml and compare every CID.

The promise of a published run is that anyone re-running its config with its seed on a
machine of the same kind gets the same global model in every round, byte for byte. This
re-runs it into a new directory and prints, round by round, the original and the
reproduced global model CIDs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fl_chain.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("reproduce", help="re-run a run from its config and compare every global CID",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run to reproduce")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to re-run (default: RUN_DIR-reproduced)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from aggregator.launch import run_experiment  # Flower and torch: only when running

    run_dir: Path = args.run_dir
    for name in ("config.yaml", "summary.json"):
        if not (run_dir / name).is_file():
            raise UsageError(f"{run_dir} is not a finished run directory (no {name})")
    out = args.out or run_dir.with_name(run_dir.name + "-reproduced")
    if out.exists():
        raise UsageError(f"{out} already exists: choose another directory with --out")
    try:
        config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    except Exception as error:  # noqa: BLE001 - any YAML or OmegaConf failure means the same to the user
        raise UsageError(f"{run_dir / 'config.yaml'} is not a readable config: {error}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{run_dir / 'config.yaml'} is not a config mapping")
    reproduced = run_experiment(config, out)
    original = json.loads((run_dir / "summary.json").read_text())
    before = {r["round"]: r["global_cid"] for r in original["rounds"]}
    after = {r["round"]: r["global_cid"] for r in reproduced["rounds"]}
    print(f"{'round':>5}  {'original':<61} {'reproduced':<61} same")
    for number in sorted(before.keys() | after.keys()):
        left, right = before.get(number, "-"), after.get(number, "-")
        print(f"{number:>5}  {left:<61} {right:<61} {'yes' if left == right else 'NO'}")
    identical = before == after
    print(f"{'every global model reproduced exactly' if identical else 'the runs differ'} ({out})", file=sys.stderr)
    return 0 if identical else 1
