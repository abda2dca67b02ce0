"""`flchain deploy --out FILE key=value ...`: found a federation on a running node for real members.

The arguments are the Hydra overrides of `flchain run` (e.g. `chain=rpc chain.url=URL
chain.keystore=FILE task=breast_cancer quorum=2`), so the federation binds itself to
the same task hash and starts from the same genesis model a run of that config would.
The keystore's account becomes the admin. The federation file it writes is what members
and aggregators load; the genesis model goes next to it (genesis.safetensors) and into
the configured content store (a local one: store/ next to the file, or --store DIR).
The URL, chain id, keystore and password are checked before the deployment is sent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from fl_chain.chain.federation_file import GENESIS_MODEL_FILE, describe
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.operator import connect_operator
from fl_chain.errors import FlChainError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "deploy",
        help="deploy a federation on a JSON-RPC node and write its federation file",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the federation file to write")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="the local content store for the genesis model, i.e. storage.dir=DIR "
                             "(default: store/ next to the federation file)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `flchain run`")
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    from aggregator.config import validate
    from experiments.harness import Experiment  # Flower and torch: only when deploying

    out: Path = args.out
    if out.exists():
        raise UsageError(f"{out} exists: it may name a deployed federation; choose another --out")
    config = _compose([*args.overrides, *([f"storage.dir={args.store.resolve()}"] if args.store else [])])
    validate(config, deployment=True)
    if config["chain"]["backend"] != "rpc":
        raise UsageError("flchain deploy needs a node that outlives it: chain=rpc chain.url=URL chain.keystore=FILE")
    if not config["chain"].get("keystore"):
        raise UsageError("flchain deploy needs the admin's keystore: chain.keystore=FILE")
    chain, admin = connect_operator(config["chain"])
    assert admin is not None  # a keystore is named
    # the genesis model and the parameters exactly as `flchain run` makes them from this config
    experiment = Experiment.prepare(config, out.parent)
    genesis = experiment.genesis
    _write_genesis_file(out.parent / GENESIS_MODEL_FILE, experiment.store.get(genesis))
    print(f"deploying on chain {chain.chain_id} as {admin.address}, genesis model {genesis}", file=sys.stderr)
    first_block = chain.web3.eth.block_number
    ledger = Ledger.deploy(chain, admin, experiment.parameters(), genesis)
    print(f"deployed federation {ledger.address}", file=sys.stderr)  # paid for: say where, whatever follows
    block = _creation_block(ledger, first_block)
    describe(ledger, genesis, block).write(out)
    print(f"federation {ledger.address} on chain {chain.chain_id}, block {block}, gas {chain.gas_used}")
    print(f"federation file {out}, genesis model {genesis} ({out.parent / GENESIS_MODEL_FILE})")
    return 0


def _compose(overrides: list[str]) -> dict[str, Any]:
    from aggregator.config import compose_experiment

    try:
        return compose_experiment(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UsageError(lines[0] if lines else type(error).__name__) from None


def _write_genesis_file(path: Path, model: bytes) -> None:
    if path.exists() and path.read_bytes() != model:
        raise UsageError(f"{path} holds another genesis model: write this federation file into another directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)


def _creation_block(ledger: Ledger, since: int) -> int | None:
    """The block the deployment was mined in, from the federation's creation event (None
    if the node cannot say: the federation file is still written, without it)."""
    try:
        created = ledger.contract.events.FederationCreated().get_logs(from_block=since)
    except FlChainError:
        return None
    return int(created[0]["blockNumber"]) if len(created) == 1 else None
