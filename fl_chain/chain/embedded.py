"""The embedded chain: an in-process EVM (py-evm) that needs no set-up.

web3 talks to it through eth-tester, exactly as it talks to a node over JSON-RPC, so
nothing above `Chain` knows which one it got. Two things differ from eth-tester's stock
chain, both for reproducibility:

- every mined block is appended to a `BlockJournal` (signed transactions + timestamp), and
  a journal can be re-executed from genesis on a fresh EVM, block hash by block hash;
- the values eth-tester takes from the wall clock or from os.urandom (genesis time,
  prevrandao) are fixed or derived from the parent block, so re-execution is exact.

Block timestamps follow the wall clock (deadlines mean real seconds), shifted by
`increase_time` for tests; the journal keeps each block's timestamp for replay.

py-evm is not thread-safe, yet the process that owns the chain uses it while the HTTP
bridge serves it to other processes from a thread: every request and clock change holds
the chain's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rlp
from eth.chains.base import MiningChain
from eth.consensus.applier import ConsensusApplier
from eth.consensus.noproof import NoProofConsensus
from eth.db.atomic import AtomicDB
from eth.vm.forks import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_tester import EthereumTester
from eth_tester.backends.pyevm.main import PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak, to_canonical_address, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.providers.eth_tester.defaults import API_ENDPOINTS

from fl_chain.chain.artifacts import FEDERATION
from fl_chain.chain.chain import Chain
from fl_chain.chain.journal import BlockJournal, BlockRecord, Genesis, JournalError

DEFAULT_CHAIN_ID = 1337
GENESIS_TIMESTAMP = 1_735_689_600  # fixed, so the genesis hash depends only on the alloc
GAS_LIMIT = 60_000_000
DEV_BALANCE = 10**24  # one million ether
# A keyless account funded at genesis that read-only calls are made from.
READER = to_checksum_address(keccak(b"fl-chain embedded reader")[:20])
_EMPTY_TRIE_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
_BLOB_TX_TYPE = 3


def _estimate_in_one_run(state: Any, transaction: Any) -> int:
    """Gas estimate from one execution at the block gas limit.

    py-evm's default binary search re-executes a call some 25 times, which made a relayed
    batch take seconds here. The caller adds headroom on top (see chain.GAS_HEADROOM),
    which covers the 63/64 rule for the one level of calls our contract makes.
    """
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(SpoofTransaction(transaction, gas=state.gas_limit))
        if computation.is_error:
            raise computation.error
        return int(transaction.intrinsic_gas + computation.get_gas_used())
    finally:
        state.revert(snapshot)


class _SameSecondPragueVM(PragueVM):
    """Prague as a development node runs it: blocks mined within one second may share its
    timestamp (anvil does), which a re-execution of that node's history must accept."""

    @classmethod
    def validate_header(cls, header: Any, parent_header: Any) -> None:
        if parent_header is not None and header.timestamp == parent_header.timestamp:
            header = header.copy(timestamp=parent_header.timestamp + 1)
        super().validate_header(header, parent_header)


def _evm_class(chain_id: int, same_second_blocks: bool = False) -> type[MiningChain]:
    vm = _SameSecondPragueVM if same_second_blocks else PragueVM
    vm_configuration = ConsensusApplier(NoProofConsensus).amend_vm_configuration(((0, vm),))

    class EmbeddedEVM(MiningChain):
        def get_transaction_builder(self) -> Any:
            return self.get_vm().get_transaction_builder()

        def estimate_gas(self, transaction: Any, at_header: Any = None) -> int:
            """Estimates on the pending block, whose time follows the embedded clock
            (py-evm would otherwise build a block stamped with the wall clock)."""
            if at_header is not None:
                return super().estimate_gas(transaction, at_header)
            return self.gas_estimator(self.get_vm(self.header).state, transaction)

        def create_header_from_parent(self, parent_header: Any, **header_params: Any) -> Any:
            header_params["gas_limit"] = parent_header.gas_limit
            return super().create_header_from_parent(parent_header, **header_params)

    EmbeddedEVM.chain_id = chain_id
    EmbeddedEVM.gas_estimator = staticmethod(_estimate_in_one_run)
    EmbeddedEVM.vm_configuration = vm_configuration
    return EmbeddedEVM


def _new_evm(genesis: Genesis, same_second_blocks: bool = False) -> MiningChain:
    alloc = {
        to_canonical_address(address): {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
        for address, balance in genesis.alloc.items()
    }
    params = {
        "coinbase": b"\x00" * 20,
        "difficulty": 0,
        "extra_data": b"",
        "gas_limit": genesis.gas_limit,
        "mix_hash": b"\x00" * 32,
        "nonce": b"\x00" * 8,
        "receipt_root": _EMPTY_TRIE_ROOT,
        "timestamp": genesis.timestamp,
        "transaction_root": _EMPTY_TRIE_ROOT,
    }
    return _evm_class(genesis.chain_id, same_second_blocks).from_genesis(AtomicDB(), params, alloc)


class _JournaledBackend(PyEVMBackend):
    """eth-tester's py-evm backend with deterministic blocks that are reported as mined."""

    def __init__(self, genesis: Genesis, on_block: Callable[[BlockRecord], None], clock: Callable[[], int],
                 same_second_blocks: bool = False):
        self._genesis = genesis
        self._same_second_blocks = same_second_blocks
        self._on_block = on_block
        self._clock = clock
        super().__init__()

    def reset_to_genesis(self, *_args: Any, **_kwargs: Any) -> None:
        self.account_keys = ()
        self.chain = _new_evm(self._genesis, self._same_second_blocks)

    def send_raw_transaction(self, raw_transaction: bytes) -> bytes:
        if raw_transaction[:1] == bytes([_BLOB_TX_TYPE]):
            raise JournalError("the embedded chain does not accept blob transactions")
        self.restamp()
        return super().send_raw_transaction(raw_transaction)

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = b"\x00" * 20) -> tuple[bytes, ...]:
        hashes = []
        for _ in range(num_blocks):
            self.restamp()
            hashes.append(bytes.fromhex(self._seal().hash.removeprefix("0x")))
        self.restamp()
        return tuple(hashes)

    def time_travel(self, to_timestamp: int) -> int:
        raise JournalError("use EmbeddedChain.increase_time on the embedded chain")

    def replay(self, record: BlockRecord) -> BlockRecord:
        """Re-executes one journaled block and returns what this EVM made of it."""
        self.chain.set_header_timestamp(record.timestamp)
        for raw in record.transactions:
            super().send_raw_transaction(bytes.fromhex(raw.removeprefix("0x")))
        return self._seal()

    def _stamp(self, timestamp: int) -> None:
        parent = self.chain.get_canonical_head()
        self.chain.set_header_timestamp(max(timestamp, parent.timestamp + 1))

    def restamp(self) -> None:
        """Keeps the pending block's time current, so estimates see the next block's time."""
        if not self.chain.get_block().transactions:
            self._stamp(self._clock())

    def _seal(self) -> Any:
        parent_hash = self.chain.header.parent_hash
        block = self.chain.mine_block(
            coinbase=b"\x00" * 20,
            mix_hash=keccak(b"fl-chain prevrandao" + parent_hash),
            blob_gas_used=0,
        )
        header = block.header
        record = BlockRecord(
            number=header.block_number,
            timestamp=header.timestamp,
            hash="0x" + header.hash.hex(),
            state_root="0x" + header.state_root.hex(),
            receipts_root="0x" + header.receipt_root.hex(),
            transactions=tuple("0x" + tx.encode().hex() for tx in block.transactions),
        )
        self._on_block(record)
        return record


class _Reverted(Exception):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


def _reverts_as_rpc_errors(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Lets a revert's raw data through eth-tester, which would otherwise flatten it."""

    def wrapped(*args: Any) -> Any:
        try:
            return endpoint(*args)
        except TransactionFailed as error:
            data = error.args[0] if error.args else b""
            if isinstance(data, Exception) and data.args:
                data = data.args[0]
            raise _Reverted(data if isinstance(data, bytes) else b"") from None

    return wrapped


class _EmbeddedProvider(EthereumTesterProvider):
    """Answers a revert the way a JSON-RPC node does (code 3 + revert data), so web3
    raises the same ContractLogicError for the embedded chain as for anvil or Geth."""

    def __init__(self, tester: EthereumTester, api_endpoints: Any, lock: threading.RLock) -> None:
        super().__init__(tester, api_endpoints=api_endpoints)
        self.lock = lock

    def make_request(self, method: Any, params: Any) -> Any:
        try:
            with self.lock:
                return super().make_request(method, params)
        except _Reverted as reverted:
            return {
                "id": 0,
                "jsonrpc": "2.0",
                "error": {"code": 3, "message": "execution reverted", "data": "0x" + reverted.data.hex()},
            }


@dataclass(frozen=True)
class BlockMismatch:
    """A journaled block that re-executed differently: the evidence for an auditor."""

    number: int
    field: str
    recorded: str
    replayed: str

    def __str__(self) -> str:
        if self.field == "number":
            return (f"block {self.replayed} is missing: the journal holds block {self.recorded} in its place "
                    "(blocks dropped or reordered)")
        return f"block {self.number}: {self.field} recorded {self.recorded}, re-executed {self.replayed}"


class EmbeddedChain:
    """An in-process chain, optionally journaled to a directory so it can be replayed."""

    def __init__(self, genesis: Genesis, journal: BlockJournal | None, same_second_blocks: bool = False) -> None:
        """`same_second_blocks` accepts blocks sharing their parent's timestamp: for
        re-executing a development node's history (fl_chain/chain/history.py)."""
        self.genesis = genesis
        self.journal = journal
        self._time_offset = 0
        self._lock = threading.RLock()
        self._backend = _JournaledBackend(genesis, self._record, self._now, same_second_blocks)
        endpoints = dict(API_ENDPOINTS)
        endpoints["eth"] = {**API_ENDPOINTS["eth"], "chainId": lambda *_: genesis.chain_id}
        for name in ("call", "estimateGas"):
            endpoints["eth"][name] = _reverts_as_rpc_errors(endpoints["eth"][name])
        provider = _EmbeddedProvider(EthereumTester(backend=self._backend), endpoints, self._lock)
        self.web3 = Web3(provider)
        # eth-tester needs a funded sender even for read-only calls
        self.web3.eth.default_account = READER

    @classmethod
    def create(
        cls,
        directory: Path | None = None,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        funded: tuple[str, ...] | list[str] = (),
        balance: int = DEV_BALANCE,
    ) -> EmbeddedChain:
        """A new chain whose genesis gives `balance` wei to each of `funded`."""
        genesis = Genesis(
            chain_id=chain_id,
            timestamp=GENESIS_TIMESTAMP,
            gas_limit=GAS_LIMIT,
            alloc={to_checksum_address(address): balance for address in (READER, *funded)},
        )
        journal = None
        if directory is not None:
            journal = BlockJournal(directory)
            journal.start(genesis)
        return cls(genesis, journal)

    @classmethod
    def resume(cls, directory: Path) -> EmbeddedChain:
        """Rebuilds a journaled chain by re-executing it, then keeps appending to it."""
        chain, mismatches = replay_journal(directory)
        if mismatches:
            raise JournalError(f"the chain journal in {directory} does not re-execute: {mismatches[0]}")
        chain.journal = BlockJournal(directory)
        head = chain._backend.chain.get_canonical_head()
        chain._time_offset = max(0, head.timestamp - int(time.time()))
        return chain

    def replay(self, record: BlockRecord) -> BlockRecord:
        """Executes one block of recorded transactions at its recorded time; returns what
        this EVM made of it (hashes are this chain's own)."""
        return self._backend.replay(record)

    def connect(self) -> Chain:
        """This process's connection: direct, its clock moved as a development node's is
        (the time shifted, then a block mined at it, so `latest` shows the new time)."""
        return Chain(self.web3, backend="embedded", increase_time=self._increase_time_and_mine)

    def _increase_time_and_mine(self, seconds: int) -> None:
        with self._lock:
            self.increase_time(seconds)
            self.web3.provider.make_request("evm_mine", [])

    def increase_time(self, seconds: int) -> None:
        """Moves this chain's clock forward (tests of deadlines)."""
        with self._lock:
            self._time_offset += int(seconds)
            self._backend.restamp()

    @property
    def block_number(self) -> int:
        return int(self._backend.chain.get_canonical_head().block_number)

    def close(self) -> None:
        """Nothing to release: present so every chain backend can be closed the same way."""

    def _now(self) -> int:
        return int(time.time()) + self._time_offset

    def _record(self, record: BlockRecord) -> None:
        if self.journal is not None:
            self.journal.append(record)

    def _reexecute(self, records: Iterator[BlockRecord]) -> Iterator[BlockMismatch]:
        for recorded in records:
            expected_number = self.block_number + 1
            if recorded.number != expected_number:
                yield BlockMismatch(recorded.number, "number", str(recorded.number), str(expected_number))
                return
            try:
                replayed = self._backend.replay(recorded)
            except Exception as error:  # noqa: BLE001 - any EVM refusal is evidence to report
                yield BlockMismatch(recorded.number, "execution", "valid transactions", f"error: {error}")
                return
            for field in ("hash", "state_root", "receipts_root"):
                if getattr(recorded, field) != getattr(replayed, field):
                    yield BlockMismatch(recorded.number, field, getattr(recorded, field), getattr(replayed, field))
                    return


# What verify re-executes of a run's records by default (the embedded EVM runs about 5M
# gas a second; the default run's ten rounds spend about 20M)
REPLAY_GAS_BUDGET = 2_000_000_000


def _fields(raw: str) -> tuple[int, bytes, bytes]:
    """(gas, to, data) of a signed transaction, typed or legacy."""
    encoded = HexBytes(raw)
    if encoded and encoded[0] < 0x7F:
        fields = TypedTransaction.from_bytes(encoded).as_dict()
        return int(fields["gas"]), bytes(fields["to"]), bytes(fields["data"])
    nonce, price, gas, to, value, data, *_ = rlp.decode(encoded)
    return int.from_bytes(gas, "big"), bytes(to), bytes(data)


def check_replayable(blocks: list[tuple[str, ...]], where: Path, budget: int | None) -> None:
    """Refuses records an fl-chain run cannot have made, before any is executed: only the
    Federation's creation (the shipped code), calls to a federation created there and plain
    transfers, and in all at most `budget` gas (None: any). Anything else (a contract of
    someone's, precompiles in a loop) could keep a re-execution busy for hours."""
    federation_code = bytes.fromhex(FEDERATION.bytecode.removeprefix("0x"))
    created: set[bytes] = set()
    total = 0
    for transactions in blocks:
        for raw in transactions:
            try:
                gas, to, data = _fields(raw)
                sender = to_canonical_address(Account.recover_transaction(raw))
            except Exception:  # noqa: BLE001 - the EVM refuses what does not decode; nothing to bound
                continue
            total += gas
            if not to and data.startswith(federation_code):
                created.add(keccak(rlp.encode([sender, _nonce_of(raw)]))[12:])
            elif to and to not in created and data:
                raise JournalError(f"{where} holds a transaction to {to_checksum_address(to)} that no fl-chain run "
                                   "sends (not a call to its federation, not a plain transfer): not re-executed")
            elif not to:
                raise JournalError(f"{where} creates a contract that is not the Federation: not re-executed")
    if budget is not None and total > budget:
        raise JournalError(f"the transactions in {where} may spend {total:,} gas, more than this re-execution "
                           f"allows ({budget:,}; verify --gas-budget raises it): refused")


def _nonce_of(raw: str) -> int:
    encoded = HexBytes(raw)
    if encoded and encoded[0] < 0x7F:
        return int(TypedTransaction.from_bytes(encoded).as_dict()["nonce"])
    return int.from_bytes(rlp.decode(encoded)[0], "big")


def replay_journal(directory: Path, gas_budget: int | None = None) -> tuple[EmbeddedChain, list[BlockMismatch]]:
    """Re-executes a journal on a fresh EVM; returns that chain and any mismatch found.

    Only a genesis as `EmbeddedChain.create` makes it is accepted (its block gas limit and
    time), and only records whose gas fits `gas_budget` (verify sets one: a few hundred
    bytes of someone's journal could otherwise ask for endless loops)."""
    journal = BlockJournal(directory)
    genesis = journal.genesis()
    if (genesis.gas_limit, genesis.timestamp) != (GAS_LIMIT, GENESIS_TIMESTAMP):
        raise JournalError(f"the genesis in {directory} has gas limit {genesis.gas_limit} and time "
                           f"{genesis.timestamp}, not an embedded chain's ({GAS_LIMIT}, {GENESIS_TIMESTAMP})")
    records = list(journal.blocks())
    check_replayable([record.transactions for record in records], directory, gas_budget)
    chain = EmbeddedChain(genesis, None)
    mismatches = list(chain._reexecute(iter(records)))
    return chain, mismatches
