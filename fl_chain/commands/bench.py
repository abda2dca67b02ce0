"""`flchain bench`: measure and print the project's tracked figures.

Suites print figures and, with --json, write them for machines; they never fail on a
number. Gas is exact and deterministic; timings are reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fl_chain.bench.gas import DEFAULT_BATCH_SIZES, measure_gas
from fl_chain.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bench", help="run benchmarks and print their figures")
    parser.add_argument("--suite", choices=["gas"], default="gas", help="which benchmark to run (default: gas)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES), metavar="N",
                        help="relayed batch sizes for the gas suite (default: 1 10 100)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if any(size < 1 for size in args.batches):
        raise UsageError("batch sizes must be at least 1")
    figures = measure_gas(sorted(set(args.batches)))
    print(figures.table())
    if args.json:
        largest = max(figures.batch_sizes)
        result = {
            f"gas_per_commitment_{size}": round(gas, 1) for size, gas in figures.relayed_per_commitment.items()
        }
        result |= {
            "gas_direct_commitment": figures.direct_per_commitment,
            "gas_naive_commitment": figures.naive_per_commitment,
            "gas_ratio_to_naive": round(figures.relayed_per_commitment[largest] / figures.naive_per_commitment, 4),
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
