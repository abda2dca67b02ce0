"""`flchain resume RUN_DIR`: finish a run that stopped, from the chain's state.

An aggregator can die at any step (killed, out of memory, its node unreachable for too
long). The chain knows which rounds are accepted and how far the open one got; the run
directory holds the config, the keys' seed, the store and the ledger journal. Resuming
re-serves the same chain, asks only participants that have not committed, re-aggregates
to the same CID and lets only validators that have not attested attest: no round is lost
or done twice, and no commitment is lost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fl_chain.rundir import open_run_dir, read_run_config


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("resume", help="finish a stopped run from the chain's state",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory to finish")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    run_dir = open_run_dir(args.run_dir, needs=("config.yaml", "federation.json"))
    config = read_run_config(run_dir)

    from aggregator.launch import resume_experiment  # Flower and torch: only when running

    resume_experiment(run_dir, config)
    return 0
