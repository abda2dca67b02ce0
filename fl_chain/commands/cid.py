"""`flchain cid FILE`: print the CID `ipfs add --cid-version=1` would give FILE.

Lets an operator check a blob against an on-chain CID without an IPFS node.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fl_chain.errors import UsageError
from fl_chain.storage.unixfs import cid_of_file, cid_of_stream


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "cid",
        help="print the IPFS CIDv1 of a file",
        description="Print the CID that `ipfs add --cid-version=1` gives FILE (kubo defaults).",
    )
    parser.add_argument("file", metavar="FILE", help="the file to hash ('-' for standard input)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.file == "-":
        cid = cid_of_stream(sys.stdin.buffer)
    else:
        path = Path(args.file)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not a file")
        try:
            cid = cid_of_file(path)
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    print(cid)
    return 0
