"""The embedded chain's journal: its genesis and every block, as signed transactions.

A run directory keeps this journal instead of a database snapshot, so an auditor can
re-execute the chain from genesis on a fresh EVM and compare every block hash (which
covers state, receipts and events). Files are plain JSON, appended one block per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_utils import is_address

from fl_chain.errors import ChainError
from fl_chain.jsonfiles import parse_json

JOURNAL_FORMAT = 1
GENESIS_FILE = "genesis.json"
BLOCKS_FILE = "blocks.jsonl"


class JournalError(ChainError):
    """The journal is missing, malformed, or does not re-execute to what it recorded."""


@dataclass(frozen=True)
class Genesis:
    chain_id: int
    timestamp: int
    gas_limit: int
    alloc: dict[str, int] = field(default_factory=dict)
    fork: str = "prague"
    format: int = JOURNAL_FORMAT


def _genesis_problem(genesis: Genesis) -> str | None:
    """What makes a genesis one no chain could start from, or None."""
    def integer(value: object, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value < high

    if not (integer(genesis.chain_id, 1, 2**63) and integer(genesis.timestamp, 0, 2**63)
            and integer(genesis.gas_limit, 1, 2**63)):
        return "its chain id, time and gas limit must be positive integers below 2**63"
    if not isinstance(genesis.alloc, dict) or not all(
            isinstance(address, str) and is_address(address) and integer(balance, 0, 2**256)
            for address, balance in genesis.alloc.items()):
        return "its alloc must map addresses to balances from 0 to 2**256"
    return None


@dataclass(frozen=True)
class BlockRecord:
    number: int
    timestamp: int
    hash: str
    state_root: str
    receipts_root: str
    transactions: tuple[str, ...]


class BlockJournal:
    """Append-only record of a chain in a directory (genesis.json + blocks.jsonl)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def exists(self) -> bool:
        return (self.directory / GENESIS_FILE).is_file()

    def start(self, genesis: Genesis) -> None:
        if self.exists:
            raise JournalError(f"a chain journal already exists in {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / GENESIS_FILE).write_text(json.dumps(asdict(genesis), indent=1) + "\n")
        (self.directory / BLOCKS_FILE).touch()

    def genesis(self) -> Genesis:
        path = self.directory / GENESIS_FILE
        if not path.is_file():
            raise JournalError(f"no chain journal in {self.directory} ({GENESIS_FILE} is missing)")
        try:
            data = parse_json(path.read_text())
            genesis = Genesis(**data)
        except (ValueError, TypeError) as error:
            raise JournalError(f"{path} is not a valid genesis file: {error}") from None
        if genesis.format != JOURNAL_FORMAT:
            raise JournalError(f"{path} has journal format {genesis.format}, expected {JOURNAL_FORMAT}")
        problem = _genesis_problem(genesis)
        if problem:
            raise JournalError(f"{path} is not a valid genesis file: {problem}")
        return genesis

    def append(self, record: BlockRecord) -> None:
        line = json.dumps(asdict(record), separators=(",", ":")) + "\n"
        with open(self.directory / BLOCKS_FILE, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def blocks(self) -> Iterator[BlockRecord]:
        path = self.directory / BLOCKS_FILE
        if not path.is_file():
            raise JournalError(f"no block log in {self.directory} ({BLOCKS_FILE} is missing)")
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = parse_json(line)
                    data["transactions"] = tuple(data["transactions"])
                    yield BlockRecord(**data)
                except (ValueError, TypeError, KeyError) as error:
                    raise JournalError(f"{path}:{line_number} is not a valid block record: {error}") from None
