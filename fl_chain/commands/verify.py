"""`flchain verify`: prove what happened in a run, trusting neither the aggregator nor the files.

    flchain verify RUN_DIR [--key FILE]...            re-executes the run's signed transactions:
                                                      its embedded chain's journal (ledger/), or
                                                      the history its own anvil left (chain/history.jsonl)
    flchain verify --rpc URL --contract ADDRESS (--store DIR | --ipfs-api ADDR) [--key FILE]...
                                                      a live chain (its node is trusted to execute;
                                                      every signature is checked)

A run directory is evidence, never instructions: nothing in it names a node, a store or a
daemon this command reaches. Its blobs are read from RUN_DIR/store unless you name a store
yourself (--store, or --ipfs-api for a kubo daemon of yours).

Exit status: 0 when every check passed, 1 when one failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from eth_account import Account

from fl_chain.chain import rpc
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import REPLAY_GAS_BUDGET, replay_journal
from fl_chain.chain.history import HISTORY_FILE, read_history, replay_history
from fl_chain.chain.journal import BLOCKS_FILE, GENESIS_FILE, BlockJournal
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import FlChainError, UsageError, printable
from fl_chain.jsonfiles import parse_json
from fl_chain.keyfile import read_key_file
from fl_chain.privacy import SEALED, PrivacyMode, mode_of
from fl_chain.protocol import Federation
from fl_chain.rundir import check_regular, open_run_dir, read_run_config, read_run_file
from fl_chain.storage.blockstore import ContentStore, LocalStore
from fl_chain.storage.ipfs import IpfsStore
from fl_chain.verify.audit import audit
from fl_chain.verify.findings import Findings
from fl_chain.verify.render import document_report, json_report, text_report


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("verify", help="replay and audit a training run",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory of `flchain run`")
    parser.add_argument("--rpc", metavar="URL", help="verify a live chain instead of a run's own records")
    parser.add_argument("--contract", metavar="ADDRESS", help="the Federation's address (with --rpc)")
    parser.add_argument("--store", type=Path, metavar="DIR", help="a local content store (default: RUN_DIR/store)")
    parser.add_argument("--ipfs-api", metavar="MULTIADDR", help="a kubo daemon of yours to read the blobs from")
    parser.add_argument("--key", type=Path, action="append", default=[], metavar="FILE",
                        help="an aggregator's or validator's key file: open updates and re-aggregate")
    parser.add_argument("--gas-budget", type=int, default=REPLAY_GAS_BUDGET, metavar="GAS",
                        help=f"the most gas re-executing the run's records may spend (default {REPLAY_GAS_BUDGET:,})")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write a report (.html or .md)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    keys = [read_key_file(path) for path in args.key]
    started = time.perf_counter()
    preliminary = Findings()
    federation, run_dir = _open(args, preliminary)
    result = audit(federation, keys, run_dir, replayed=not args.rpc)
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


def _open(args: argparse.Namespace, findings: Findings) -> tuple[Federation, Path | None]:
    if args.rpc:
        if not args.contract or not (args.store or args.ipfs_api):
            raise UsageError("--rpc needs --contract ADDRESS and a store (--store DIR or --ipfs-api MULTIADDR)")
        ledger = Ledger.attach(rpc.connect(args.rpc), args.contract)
        _check_signatures(ledger, findings)
        run_dir = open_run_dir(args.run_dir, needs=()) if args.run_dir else None
        return Federation(ledger, _store(args, None), _privacy_of(run_dir)), run_dir
    if args.run_dir is None:
        raise UsageError("name a run directory, or a live chain with --rpc URL --contract ADDRESS --store DIR")
    run_dir = open_run_dir(args.run_dir, needs=("federation.json",))
    address = _federation_address(run_dir / "federation.json")
    chain = _replayed_chain(run_dir, findings, args.gas_budget)
    if not bytes(chain.web3.eth.get_code(address)):
        raise UsageError(f"the chain in {run_dir} holds no contract at {address}: federation.json and the chain's "
                         "records come from different runs")
    return Federation(Ledger.attach(chain, address), _store(args, run_dir), _privacy_of(run_dir)), run_dir


def _privacy_of(run_dir: Path | None) -> PrivacyMode:
    """The mode the run's config names, to open its updates with; the audit checks that
    config against the federation's task hash. Without a readable config: `sealed`."""
    if run_dir is None or not os.path.lexists(run_dir / "config.yaml"):
        return SEALED
    try:
        config = read_run_config(run_dir)
    except FlChainError:  # the audit reports it
        return SEALED
    return mode_of(config)


MAX_FEDERATION_FILE = 16 << 20  # a federation file lists its members: kilobytes, megabytes for a very large one


def _federation_address(path: Path) -> str:
    try:
        document = parse_json(read_run_file(path, MAX_FEDERATION_FILE))
    except ValueError as error:
        raise UsageError(f"federation file {path} is not readable JSON: {printable(error)}") from None
    address = document.get("address") if isinstance(document, dict) else None
    if not isinstance(address, str) or not address.startswith("0x") or len(address) != 42:
        raise UsageError(f"{path} names no federation address (got {printable(address, 60)!r})")
    try:
        int(address, 16)
    except ValueError:
        raise UsageError(f"{path} names no federation address (got {printable(address, 60)!r})") from None
    return address


def _replayed_chain(run_dir: Path, findings: Findings, gas_budget: int) -> Chain:
    """The run's chain, rebuilt by re-executing its signed transactions on a fresh EVM."""
    journal = run_dir / "ledger"
    for record in (journal / GENESIS_FILE, journal / BLOCKS_FILE, run_dir / HISTORY_FILE):
        if os.path.lexists(record):
            check_regular(record)
    try:
        if BlockJournal(journal).exists:
            replayed, mismatches = replay_journal(journal, gas_budget)
            for mismatch in mismatches:
                findings.failed("chain journal re-executes", str(mismatch))
            if not mismatches:
                findings.passed("chain journal re-executes")
            return replayed.connect()
        if (run_dir / HISTORY_FILE).is_file():
            history = replay_history(run_dir / HISTORY_FILE, gas_budget)
            findings.passed("chain history re-executes")
            for problem in history.unsigned:
                findings.failed("every transaction signed by its sender", problem)
            if not history.unsigned:
                findings.passed("every transaction signed by its sender")
            return history.chain.connect()
    except (FlChainError, OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"the chain records in {run_dir} cannot be re-executed: {printable(error)}") from None
    raise UsageError(f"{run_dir} holds no chain records (ledger/ or {HISTORY_FILE}): it ran on a live chain, verify "
                     "it with --rpc URL --contract ADDRESS")


def _store(args: argparse.Namespace, run_dir: Path | None) -> ContentStore:
    """Only a store the user names, or the run directory's own."""
    if args.ipfs_api:
        return IpfsStore(args.ipfs_api)
    directory = args.store or (run_dir / "store" if run_dir else None)
    if directory is None or not Path(directory).is_dir():
        raise UsageError(f"content store {directory} does not exist (a run that kept its blobs on kubo is verified "
                         "with --ipfs-api naming your daemon, or --store with a copy of them)")
    return LocalStore(directory)


def _check_signatures(ledger: Ledger, findings: Findings) -> None:
    """On a live node, each transaction behind the federation's events must be signed by
    its sender: a development node can record transactions nobody signed (impersonation)."""
    web3 = ledger.chain.web3
    checked: set[str] = set()
    for event in read_history(ledger):
        if event.transaction in checked:
            continue
        checked.add(event.transaction)
        answer = web3.provider.make_request("eth_getRawTransactionByHash", [event.transaction])
        raw = answer.get("result") if isinstance(answer, dict) else None
        claimed = web3.eth.get_transaction(event.transaction)["from"]
        try:
            signer = Account.recover_transaction(raw) if isinstance(raw, str) else None
        except Exception:  # noqa: BLE001 - no valid signature: no signer
            signer = None
        if signer != claimed:
            findings.failed("every transaction signed by its sender", f"transaction {event.transaction} in block "
                            f"{event.block_number} claims sender {claimed} but is not signed by it")
            return
    findings.passed("every transaction signed by its sender")
