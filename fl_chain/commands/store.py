"""`flchain store`: move a run's blobs between its local store and a kubo daemon, as CAR files.

    flchain store push RUN_DIR [--api MULTIADDR]            every pinned blob of RUN_DIR/store, pinned on kubo
    flchain store pull RUN_DIR --cid CID... [--api MULTIADDR]   blobs from kubo into RUN_DIR/store, pinned there

CIDs do not change on the way: what a run committed on chain resolves on IPFS, and back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fl_chain.errors import UsageError
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid
from fl_chain.storage.ipfs import DEFAULT_API, DEFAULT_TIMEOUT, IpfsStore, pull, push


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("store", help="move a run's blobs to or from a kubo (IPFS) daemon",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in (("push", "copy every pinned blob of RUN_DIR/store to kubo, pinned there"),
                            ("pull", "copy blobs from kubo into RUN_DIR/store, pinned there")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory of `flchain run`")
        action.add_argument("--api", default=DEFAULT_API, metavar="MULTIADDR",
                            help=f"the kubo RPC API (default: {DEFAULT_API})")
        action.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                            help=f"bound on each call to kubo (default: {DEFAULT_TIMEOUT:g})")
        if name == "pull":
            action.add_argument("--cid", dest="cids", nargs="+", action="extend", required=True, metavar="CID",
                                help="the blobs to fetch")
        action.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    pushing = args.action == "push"
    if pushing and not (run_dir / "store").is_dir():
        raise UsageError(f"{run_dir} has no content store (store/): nothing to push")
    local = LocalStore(run_dir / "store")
    roots = local.pins() if pushing else list(dict.fromkeys(Cid.parse(text) for text in args.cids))
    moved = {"blobs": 0, "bytes": 0}

    def report(cid: Cid, car_bytes: int) -> None:
        moved["blobs"] += 1
        moved["bytes"] += car_bytes
        print(f"[{moved['blobs']}/{len(roots)}] {cid} ({car_bytes:,} bytes)", file=sys.stderr, flush=True)

    with IpfsStore(args.api, timeout=args.timeout) as ipfs:
        if pushing:
            push(local, ipfs, roots, report)
        else:
            pull(ipfs, local, roots, report)
    print(f"{'pushed' if pushing else 'pulled'} {moved['blobs']} blobs ({moved['bytes']:,} bytes of CAR files), "
          f"each pinned, {'to' if pushing else 'from'} kubo {ipfs.version} at {args.api}")
    return 0
