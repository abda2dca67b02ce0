"""The `flchain` command: dispatches to sub-commands and shows expected errors once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fl_chain.errors import FlChainError
from fl_chain.commands import bench, cid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flchain", description="Federated learning with on-chain aggregation."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (bench, cid):
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FlChainError as error:
        print(f"flchain: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("flchain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
