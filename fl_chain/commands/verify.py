"""`flchain verify`: prove what happened in a run, trusting neither the aggregator nor the files.

    flchain verify RUN_DIR [--key FILE]...            embedded chain: re-executes the journal
                                                      (a deployment demo: reloads its anvil state)
    flchain verify --rpc URL --contract ADDRESS --store DIR [--key FILE]...   a live chain

Exit status: 0 when every check passed, 1 when one failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import replay_journal
from fl_chain.chain.journal import BlockJournal
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import FlChainError, UsageError
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import read_key_file
from fl_chain.protocol import Federation
from fl_chain.rundir import open_run_dir, read_run_config
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import ContentStore, LocalStore
from fl_chain.verify.audit import audit
from fl_chain.verify.findings import Findings
from fl_chain.verify.render import document_report, json_report, text_report


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("verify", help="replay and audit a training run",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory of `flchain run`")
    parser.add_argument("--rpc", metavar="URL", help="verify a live chain instead of a run's journal")
    parser.add_argument("--contract", metavar="ADDRESS", help="the Federation's address (with --rpc)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="a local content store (default: the run's own, RUN_DIR/store or its kubo for storage=ipfs)")
    parser.add_argument("--key", type=Path, action="append", default=[], metavar="FILE",
                        help="an aggregator's or validator's key file: open updates and re-aggregate")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write a report (.html or .md)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    keys = [read_key_file(path) for path in args.key]
    started = time.perf_counter()
    preliminary = Findings()
    with ExitStack() as stack:
        federation, run_dir = _open(args, preliminary, stack)
        result = audit(federation, keys, run_dir)
    result.findings.items[:0] = preliminary.items
    seconds = time.perf_counter() - started
    if args.report:
        document_report(result, args.report, run_dir)
    if args.json:
        print(json.dumps(json_report(result, seconds), indent=1))
    else:
        print(text_report(result))
        print(f"verified in {seconds:.1f} s", file=sys.stderr)
    return 0 if result.findings.ok else 1


def _open(args: argparse.Namespace, findings: Findings, stack: ExitStack) -> tuple[Federation, Path | None]:
    if args.rpc:
        if not args.contract or not args.store:
            raise UsageError("--rpc needs --contract ADDRESS and --store DIR")
        chain = rpc.connect(args.rpc)
        run_dir = open_run_dir(args.run_dir, needs=()) if args.run_dir else None
        return Federation(Ledger.attach(chain, args.contract), _store(args.store)), run_dir
    run_dir = args.run_dir
    if run_dir is None:
        raise UsageError("name a run directory, or a live chain with --rpc URL --contract ADDRESS --store DIR")
    federation_file = open_run_dir(run_dir, needs=("federation.json",)) / "federation.json"
    federation = read_json(federation_file, "federation file")
    address = federation.get("address") if isinstance(federation, dict) else None
    if not isinstance(address, str):
        raise UsageError(f"{federation_file} names no federation address")
    if not BlockJournal(run_dir / "ledger").exists and (run_dir / ANVIL_STATE).is_file():
        chain_id = federation.get("chain_id")
        if isinstance(chain_id, bool) or not isinstance(chain_id, int):
            raise UsageError(f"{federation_file} names no chain id (got {chain_id!r})")
        node = stack.enter_context(AnvilNode(chain_id=chain_id, load_state=run_dir / ANVIL_STATE))
        findings.passed("chain state loads into a fresh anvil")
        chain = rpc.connect(node.url, expected_chain_id=chain_id)
        return Federation(Ledger.attach(chain, address), _store(args.store) if args.store else _run_store(run_dir)), run_dir
    if not BlockJournal(run_dir / "ledger").exists:
        raise UsageError(f"{run_dir} has no chain journal (ledger/): it ran on a live chain, verify it with --rpc")
    replayed, mismatches = replay_journal(run_dir / "ledger")
    if mismatches:
        for mismatch in mismatches:
            findings.failed("chain journal re-executes", str(mismatch))
    else:
        findings.passed("chain journal re-executes")
    chain = Chain(replayed.web3, backend="embedded")
    if not bytes(chain.web3.eth.get_code(address)):
        raise FlChainError(f"the chain journal in {run_dir / 'ledger'} holds no contract at {address}: "
                         "federation.json and ledger/ come from different runs")
    return Federation(Ledger(chain, address), _store(args.store) if args.store else _run_store(run_dir)), run_dir


ANVIL_STATE = "chain/anvil-state.json"  # a deployment demo's chain, dumped by anvil when it stopped


def _run_store(run_dir: Path) -> ContentStore:
    """The store the run used: its kubo daemon if it ran with storage=ipfs, else RUN_DIR/store."""
    try:
        storage = read_run_config(run_dir).get("storage", {})
    except UsageError:  # an unreadable config.yaml is a finding of the audit, not a reason to stop here
        storage = {}
    if storage.get("backend") == "ipfs":
        return open_store(storage, run_dir)
    return _store(run_dir / "store")


def _store(directory: Path) -> LocalStore:
    if not Path(directory).is_dir():
        raise UsageError(f"content store {directory} does not exist")
    return LocalStore(directory)
