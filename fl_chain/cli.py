"""The `flchain` command: dispatches to sub-commands and shows expected errors once.

Commands that need more than the library (`flchain run` and `flchain bench` drive
Flower) are plugged in
through the `flchain.commands` entry-point group, so `fl_chain` itself never imports
Flower.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from fl_chain.commands import cid, keys, members, status, store, verify
from fl_chain.errors import FlChainError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flchain", description="Federated learning with on-chain aggregation."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (cid, store, verify, members, status, keys):
        command.register(subparsers)
    for plugin in entry_points(group="flchain.commands"):
        plugin.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not getattr(args, "passes_unknown_arguments", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *unknown]
    try:
        return int(args.handler(args) or 0)
    except FlChainError as error:
        print(f"flchain: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("flchain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`flchain verify --json | head`): not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
