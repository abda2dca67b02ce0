"""A federation's event log in chain order, and a chain's signed history that re-executes anywhere.

Every state change of the Federation contract emits an event; read together, in block
and log order, they say who was a member when, which rounds opened on which model, who
committed what and when, what was finalized and attested. Block timestamps are attached
so deadlines can be checked against the time the chain itself recorded.

A node that ends with its run (the run's own anvil) leaves its history behind as signed
transactions, block by block (`export_history`). `replay_history` re-executes them on a
fresh embedded EVM: what an auditor then reads is what those signatures caused, not what
a state file says. A transaction whose signature is not its sender's (anvil's
impersonation, or a forgery) is not replayed, and said so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from fl_chain.chain.embedded import (
    DEV_BALANCE,
    GAS_LIMIT,
    GENESIS_TIMESTAMP,
    READER,
    EmbeddedChain,
    check_replayable,
)
from fl_chain.chain.journal import BlockRecord, Genesis
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import ChainError
from fl_chain.jsonfiles import parse_json

EVENTS = (
    "FederationCreated", "AdminChanged", "MemberAdded", "MemberRemoved", "AggregatorChanged",
    "RoundOpened", "Committed", "CommitmentRefused", "UnverifiedEntrySkipped", "Excluded", "Finalized", "Attested",
    "Accepted", "RoundFailed",
)
HISTORY_FORMAT = "fl-chain-history/1"
HISTORY_FILE = "chain/history.jsonl"  # in a run directory whose chain ended with it


class HistoryError(ChainError):
    """An exported chain history that cannot be read or re-executed."""


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    timestamp: int
    transaction: str


def read_history(ledger: Ledger) -> list[Event]:
    """All of the federation's events, oldest first (one scan of the chain's logs)."""
    web3 = ledger.chain.web3
    decoders = {}
    for name in EVENTS:
        event = getattr(ledger.contract.events, name)()
        decoders[str(event.topic).lower()] = (name, event)
    events: list[Event] = []
    timestamps: dict[int, int] = {}
    for log in web3.eth.get_logs({"address": ledger.address, "fromBlock": 0, "toBlock": "latest"}):
        topics = log.get("topics") or []
        decoder = decoders.get("0x" + bytes(topics[0]).hex()) if topics else None
        if decoder is None:
            continue
        name, event = decoder
        block = int(log["blockNumber"])
        if block not in timestamps:
            timestamps[block] = int(web3.eth.get_block(block)["timestamp"])
        events.append(Event(
            name=name,
            args=dict(event.process_log(log)["args"]),
            block_number=block,
            log_index=int(log["logIndex"]),
            timestamp=timestamps[block],
            transaction="0x" + bytes(log["transactionHash"]).hex(),
        ))
    events.sort(key=lambda event: (event.block_number, event.log_index))
    return events


# ---------------------------------------------------------------- signed history


def export_history(web3: Web3, path: Path) -> int:
    """Writes every block after genesis as its timestamp and raw signed transactions;
    returns the number of transactions written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w") as handle:
        handle.write(json.dumps({"format": HISTORY_FORMAT, "chain_id": int(web3.eth.chain_id)}) + "\n")
        for number in range(1, int(web3.eth.block_number) + 1):
            block = web3.eth.get_block(number)
            raw = [_raw_transaction(web3, transaction) for transaction in block["transactions"]]
            count += len(raw)
            handle.write(json.dumps({"number": number, "timestamp": int(block["timestamp"]), "transactions": raw}) + "\n")
    return count


def _raw_transaction(web3: Web3, transaction_hash: Any) -> str:
    answer = web3.provider.make_request("eth_getRawTransactionByHash", ["0x" + bytes(transaction_hash).hex()])
    raw = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(raw, str):
        raise HistoryError(f"the node gave no raw transaction for {bytes(transaction_hash).hex()}: {answer!r}")
    return raw


@dataclass(frozen=True)
class Replayed:
    """A re-executed history: the chain, and every transaction that was not replayed, and why."""

    chain: EmbeddedChain
    unsigned: tuple[str, ...]


def replay_history(path: Path, gas_budget: int | None = None) -> Replayed:
    """Re-executes an exported history on a fresh EVM whose genesis funds every signer
    (refused if its transactions may spend more than `gas_budget`)."""
    chain_id, blocks = _read(path)
    blocks = list(blocks)
    try:
        check_replayable([tuple(transactions) for _, _, transactions in blocks], path, gas_budget)
    except ChainError as error:
        raise HistoryError(str(error)) from None
    unsigned: list[str] = []
    signed_blocks: list[tuple[int, int, list[str]]] = []
    senders: set[str] = set()
    for number, timestamp, transactions in blocks:
        kept = []
        for raw in transactions:
            sender = _signer(raw)
            if sender is None:
                unsigned.append(f"a transaction in block {number} carries no valid signature (an impersonated or "
                                f"forged sender): it is not replayed")
                continue
            senders.add(sender)
            kept.append(raw)
        signed_blocks.append((number, timestamp, kept))
    genesis = Genesis(chain_id=chain_id, timestamp=GENESIS_TIMESTAMP, gas_limit=GAS_LIMIT,
                      alloc={address: DEV_BALANCE for address in sorted({READER, *senders})})
    chain = EmbeddedChain(genesis, None, same_second_blocks=True)
    for number, timestamp, kept in signed_blocks:
        try:
            chain.replay(BlockRecord(number=number, timestamp=timestamp, hash="", state_root="", receipts_root="",
                                     transactions=tuple(kept)))
        except Exception as error:  # noqa: BLE001 - any refusal of the EVM is evidence to report
            raise HistoryError(f"block {number} of {path} does not re-execute: {error}") from None
    return Replayed(chain, tuple(unsigned))


def _signer(raw: str) -> str | None:
    try:
        return Account.recover_transaction(raw)
    except Exception:  # noqa: BLE001 - any undecodable or unsigned transaction has no signer
        return None


def _read(path: Path) -> tuple[int, Iterator[tuple[int, int, list[str]]]]:
    try:
        lines = Path(path).read_text().splitlines()
        header = parse_json(lines[0])
        if not isinstance(header, dict) or header.get("format") != HISTORY_FORMAT:
            raise ValueError(f"it is not {HISTORY_FORMAT}")
        chain_id = header["chain_id"]
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 < chain_id < 2**63:
            raise ValueError(f"chain id {chain_id!r}")
        blocks = [parse_json(line) for line in lines[1:]]
        parsed = []
        for expected, block in enumerate(blocks, start=1):
            number, timestamp, transactions = block["number"], block["timestamp"], block["transactions"]
            if (number != expected or isinstance(timestamp, bool) or not isinstance(timestamp, int)
                    or not 0 <= timestamp < 2**63 or not isinstance(transactions, list)
                    or not all(isinstance(raw, str) for raw in transactions)):
                raise ValueError(f"block entry {expected} is malformed")
            parsed.append((number, timestamp, transactions))
    except (OSError, IndexError, KeyError, TypeError, ValueError) as error:
        raise HistoryError(f"{path} is not a readable chain history: {error}") from None
    return chain_id, iter(parsed)
