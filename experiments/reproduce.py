"""`flchain reproduce RUN_DIR [KEY=VALUE...]`: re-run a run's experiment and compare every CID.

The promise of a published run is that anyone re-running its config with its seed on a
machine of the same kind gets the same global model in every round, byte for byte. This
re-runs it into a new directory and prints, round by round, the original and the
reproduced global model CIDs. Only the global models are compared: the keys that seal
updates are fresh for every run, so update blobs (and their CIDs) differ by design.

Only what the run trains is taken from its config.yaml (experiments/published.py); where
it runs comes from the command line: `chain=...`, `storage=...`, `task.files=[...]`
(by default the run's own kind of development chain and a store in the new directory).
Before any ether is spent from a keystore you are asked, or pass --yes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.confirm import confirmer
from experiments.published import compose_from_run
from fl_chain.errors import UsageError, printable
from fl_chain.jsonfiles import read_json
from fl_chain.rundir import open_run_dir


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("reproduce", help="re-run a run from its config and compare every global CID",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run to reproduce")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to re-run (default: RUN_DIR-reproduced)")
    parser.add_argument("--yes", action="store_true", help="spend from the named keystore without asking")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="where to run: chain=..., storage=..., task.files=[...] (Hydra overrides)")
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    run_dir = open_run_dir(args.run_dir, needs=("config.yaml", "summary.json"))
    out = args.out or run_dir.with_name(run_dir.name + "-reproduced")
    if out.exists():
        raise UsageError(f"{out} already exists: choose another directory with --out")
    config = compose_from_run(run_dir, args.overrides)
    before = _global_models(run_dir / "summary.json")

    from experiments.harness import run_experiment  # Flower and torch: only when running
    from experiments.simulation import simulate

    reproduced = run_experiment(config, out, simulate, confirm=confirmer(args.yes))
    after = {r["round"]: r["global_cid"] for r in reproduced["rounds"]}
    print(f"{'round':>5}  {'original':<61} {'reproduced':<61} same")
    for number in sorted(before.keys() | after.keys()):
        left, right = before.get(number, "-"), after.get(number, "-")
        print(f"{number:>5}  {left:<61} {right:<61} {'yes' if left == right else 'NO'}")
    identical = before == after
    print(f"{'every global model reproduced exactly' if identical else 'the runs differ'} ({out})", file=sys.stderr)
    return 0 if identical else 1


def _global_models(summary_file: Path) -> dict[int, str]:
    """Round number -> global model CID, as the original run's summary.json records them."""
    summary = read_json(summary_file, "run summary")
    try:
        return {int(r["round"]): printable(r["global_cid"], 100) for r in summary["rounds"]}
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{summary_file} does not list rounds with their global model CIDs") from None
