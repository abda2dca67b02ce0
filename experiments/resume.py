"""`flchain resume RUN_DIR [KEY=VALUE...]`: finish a run that stopped, from the chain's state.

An aggregator can die at any step (killed, out of memory, its node unreachable for too
long). The chain knows which rounds are accepted and how far the open one got; the run
directory holds the config, the keys' seed, the store and the ledger journal. Resuming
re-serves the same chain, asks only participants that have not committed, re-aggregates
to the same CID and lets only validators that have not attested attest: no round is lost
or done twice, and no commitment is lost.

The run's config.yaml is read as data, and only what it trains is taken from it: a run
on a node of its own (chain=rpc) or with its blobs on kubo needs those named again on the
command line (`chain=rpc chain.url=... chain.keystore=...`, `storage=ipfs ...`), and any
spending from a keystore is confirmed first (or pass --yes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.confirm import confirmer
from experiments.published import compose_from_run, stored_elsewhere
from fl_chain.rundir import open_run_dir


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("resume", help="finish a stopped run from the chain's state",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory to finish")
    parser.add_argument("--yes", action="store_true", help="spend from the named keystore without asking")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="where the run's chain and store are: chain=..., storage=... (Hydra overrides)")
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    run_dir = open_run_dir(args.run_dir, needs=("config.yaml", "federation.json"))
    config = compose_from_run(run_dir, args.overrides)
    stored_elsewhere(run_dir, args.overrides)

    from experiments.harness import resume_experiment  # Flower and torch: only when running
    from experiments.simulation import simulate

    resume_experiment(run_dir, config, simulate, confirm=confirmer(args.yes))
    return 0
