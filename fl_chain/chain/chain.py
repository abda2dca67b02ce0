"""`Chain`: sends locally signed transactions to any backend web3 can reach.

The embedded EVM and a JSON-RPC node (anvil, Geth, Besu) differ only in the web3 provider
below this class. Keys never leave the process: transactions are signed here, nonces are
tracked here, and a refusal is decoded from the contract's ABI into a clear error before
anything is mined (gas estimation runs the call first).

Each transaction is sent exactly once, even across a node's outage: its hash is known
before it is sent, so when an answer is lost the node is asked whether it has the
transaction before the same bytes go out again (they carry one nonce, so they can be mined
only once), and a node that forgot a pending transaction is handed it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxReceipt

from fl_chain.chain.errors import (
    ChainTimeout,
    ChainUnreachable,
    ConnectionLost,
    InsufficientFunds,
    NonceConflict,
    TransactionReverted,
)
from fl_chain.chain.reverts import Revert, decode_revert
from fl_chain.errors import ChainError

PRIORITY_FEE = 10**9  # 1 gwei; a fixed tip keeps embedded transactions byte-reproducible
GAS_HEADROOM = 1.2
RECEIPT_POLL_SECONDS = 0.05
POLLS_PER_PRESENCE_CHECK = 20  # while waiting for a receipt, about once a second: does the node still have it?
SEND_ATTEMPTS = 5

Explainer = Callable[[Revert], str]


def _plain_explanation(revert: Revert) -> str:
    details = ", ".join(f"{key}={value!r}" for key, value in revert.args.items())
    return f"the contract refused the call: {revert.name}({details})"


def _has_message(response: Any) -> bool:
    return isinstance(response, dict) and isinstance(response.get("error"), dict) and "message" in response["error"]


class Chain:
    """A connection to one chain: identity (chain id), transactions, and dev controls."""

    def __init__(
        self,
        web3: Web3,
        *,
        backend: str,
        increase_time: Callable[[int], None] | None = None,
        on_close: Callable[[], None] | None = None,
        receipt_timeout: float = 120.0,
        development: bool | None = None,
    ) -> None:
        self.web3 = web3
        self.backend = backend
        # a chain this run started itself (embedded, or its own anvil): nobody else reaches it
        self.development = backend == "embedded" if development is None else development
        self.chain_id = int(web3.eth.chain_id)
        self.receipt_timeout = receipt_timeout
        self._increase_time = increase_time
        self._on_close = on_close
        self._nonces: dict[str, int] = {}
        self.gas_used = 0  # by every transaction this process sent, for cost reporting
        self._lock = threading.Lock()

    def transact(
        self,
        sender: LocalAccount,
        call: ContractFunction,
        *,
        explain: Explainer = _plain_explanation,
    ) -> TxReceipt:
        """Estimates, signs, sends and waits for `call`; a refusal raises TransactionReverted."""
        transaction = call.build_transaction({"from": sender.address, "gas": 0, "nonce": 0})
        return self._send(sender, transaction, call.contract_abi, explain)

    def deploy(
        self,
        sender: LocalAccount,
        abi: Sequence[dict[str, Any]],
        bytecode: str,
        *args: Any,
        explain: Explainer = _plain_explanation,
    ) -> TxReceipt:
        constructor = self.web3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args)
        transaction = constructor.build_transaction({"from": sender.address, "gas": 0, "nonce": 0})
        return self._send(sender, transaction, abi, explain)

    def transfer(self, sender: LocalAccount, recipient: str, wei: int) -> TxReceipt:
        """A plain payment, e.g. an operator giving the run's accounts gas money."""
        return self._send(sender, {"to": to_checksum_address(recipient), "value": int(wei)}, (), _plain_explanation)

    def max_fee_per_gas(self) -> int:
        """What the next transaction may pay per gas at most (twice the base fee plus the tip)."""
        base_fee = int(self.web3.eth.get_block("latest")["baseFeePerGas"])
        return 2 * base_fee + PRIORITY_FEE

    def increase_time(self, seconds: int) -> None:
        """Moves a development chain's clock forward (tests of deadlines)."""
        if self._increase_time is None:
            raise ChainError(f"the {self.backend} chain has no clock control (only development chains do)")
        self._increase_time(seconds)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def _send(
        self, sender: LocalAccount, transaction: dict[str, Any], abi: Sequence[dict[str, Any]], explain: Explainer
    ) -> TxReceipt:
        transaction = {key: value for key, value in transaction.items() if key not in ("gas", "gasPrice", "nonce")}
        transaction.update({"maxFeePerGas": self.max_fee_per_gas(), "maxPriorityFeePerGas": PRIORITY_FEE})
        transaction["chainId"] = self.chain_id
        try:
            estimate = self.web3.eth.estimate_gas({**transaction, "from": sender.address})
        except ContractLogicError as error:
            raise self._refusal(error, abi, explain) from None
        except Web3RPCError as error:
            raise self._rejection(error, sender.address) from None
        transaction["gas"] = int(estimate * GAS_HEADROOM)
        with self._lock:
            transaction["nonce"] = self._next_nonce(sender.address)
            signed = sender.sign_transaction(transaction)
            self._broadcast(signed, sender.address)
            self._nonces[sender.address] = transaction["nonce"] + 1
        receipt = self._await_receipt(signed, sender.address)
        self.gas_used += int(receipt["gasUsed"])
        if receipt["status"] != 1:
            raise TransactionReverted(
                f"transaction {signed.hash.to_0x_hex()} reverted in block {receipt['blockNumber']} "
                "(state changed between estimation and mining)"
            )
        return receipt

    def _broadcast(self, signed: SignedTransaction, sender: str) -> None:
        """Hands `signed` to the node; after a lost answer or a refusal, first asks whether
        the node has it already (then it was delivered), and sends it again only if not."""
        for _ in range(SEND_ATTEMPTS):
            try:
                self.web3.eth.send_raw_transaction(signed.raw_transaction)
                return
            except ConnectionLost:
                if self._node_has(signed):
                    return
            except Web3RPCError as error:  # e.g. "already known" or "nonce too low" for our own bytes
                if self._node_has(signed):
                    return
                raise self._rejection(error, sender) from None
        raise ChainUnreachable(
            f"transaction {signed.hash.to_0x_hex()} from {sender} could not be handed to the node "
            f"in {SEND_ATTEMPTS} attempts (its answers kept getting lost)"
        )

    def _await_receipt(self, signed: SignedTransaction, sender: str) -> TxReceipt:
        """Polls for the receipt; a node that dropped the pending transaction (restarted,
        evicted it from its pool) is handed it again."""
        deadline = time.monotonic() + self.receipt_timeout
        polls = 0
        while True:
            try:
                return self.web3.eth.get_transaction_receipt(signed.hash)
            except TransactionNotFound:
                pass
            if time.monotonic() >= deadline:
                raise ChainTimeout(
                    f"transaction {signed.hash.to_0x_hex()} from {sender} was not mined within "
                    f"{self.receipt_timeout:.0f} s"
                )
            polls += 1
            if polls % POLLS_PER_PRESENCE_CHECK == 0 and not self._node_has(signed):
                self._broadcast(signed, sender)
            time.sleep(RECEIPT_POLL_SECONDS)

    def _node_has(self, signed: SignedTransaction) -> bool:
        """Whether the node knows the transaction, mined or pending."""
        for lookup in (self.web3.eth.get_transaction_receipt, self.web3.eth.get_transaction):
            try:
                lookup(signed.hash)
                return True
            except TransactionNotFound:
                continue
        return False

    def _rejection(self, error: Web3RPCError, sender: str) -> ChainError:
        """The node's refusal of a transaction (not the contract's) as an error to act on."""
        message = str(error.rpc_response["error"]["message"]) if _has_message(error.rpc_response) else str(error)
        if "insufficient funds" in message.lower():
            return InsufficientFunds(f"{sender} cannot pay for its transaction on chain {self.chain_id}: {message}")
        if "nonce too low" in message.lower():
            self._nonces.pop(sender, None)
            return NonceConflict(
                f"another transaction from {sender} took the nonce of ours ({message}): "
                "is another process sending from this account?"
            )
        return ChainError(f"the node refused a transaction from {sender}: {message}")

    def _next_nonce(self, address: str) -> int:
        on_chain = int(self.web3.eth.get_transaction_count(address, "pending"))
        return max(on_chain, self._nonces.get(address, 0))

    @staticmethod
    def _refusal(error: ContractLogicError, abi: Sequence[dict[str, Any]], explain: Explainer) -> TransactionReverted:
        data = error.data if isinstance(error.data, str) else None
        revert = decode_revert(abi, bytes.fromhex(data.removeprefix("0x"))) if data else None
        if revert is None:
            return TransactionReverted(f"the contract refused the call: {error}")
        return TransactionReverted(explain(revert), revert.name, revert.args)
