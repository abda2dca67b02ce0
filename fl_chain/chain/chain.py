"""`Chain`: sends locally signed transactions to any backend web3 can reach.

The embedded EVM and a JSON-RPC node (anvil, Geth, Besu) differ only in the web3 provider
below this class. Keys never leave the process: transactions are signed here, nonces are
tracked here, and a refusal is decoded from the contract's ABI into a clear error before
anything is mined (gas estimation runs the call first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.types import TxReceipt

from fl_chain.chain.errors import ChainTimeout, TransactionReverted
from fl_chain.chain.reverts import Revert, decode_revert
from fl_chain.errors import ChainError

PRIORITY_FEE = 10**9  # 1 gwei; a fixed tip keeps embedded transactions byte-reproducible
GAS_HEADROOM = 1.2

Explainer = Callable[[Revert], str]


def _plain_explanation(revert: Revert) -> str:
    details = ", ".join(f"{key}={value!r}" for key, value in revert.args.items())
    return f"the contract refused the call: {revert.name}({details})"


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
    ) -> None:
        self.web3 = web3
        self.backend = backend
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
        transaction.update(self._fees())
        transaction["chainId"] = self.chain_id
        try:
            estimate = self.web3.eth.estimate_gas({**transaction, "from": sender.address})
        except ContractLogicError as error:
            raise self._refusal(error, abi, explain) from None
        transaction["gas"] = int(estimate * GAS_HEADROOM)
        with self._lock:
            transaction["nonce"] = self._next_nonce(sender.address)
            signed = sender.sign_transaction(transaction)
            tx_hash = self.web3.eth.send_raw_transaction(signed.raw_transaction)
            self._nonces[sender.address] = transaction["nonce"] + 1
        try:
            receipt = self.web3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=0.05
            )
        except TimeExhausted:
            raise ChainTimeout(
                f"transaction {tx_hash.hex()} from {sender.address} was not mined within "
                f"{self.receipt_timeout:.0f} s"
            ) from None
        self.gas_used += int(receipt["gasUsed"])
        if receipt["status"] != 1:
            raise TransactionReverted(
                f"transaction {tx_hash.hex()} reverted in block {receipt['blockNumber']} "
                "(state changed between estimation and mining)"
            )
        return receipt

    def _fees(self) -> dict[str, int]:
        base_fee = int(self.web3.eth.get_block("latest")["baseFeePerGas"])
        return {"maxFeePerGas": 2 * base_fee + PRIORITY_FEE, "maxPriorityFeePerGas": PRIORITY_FEE}

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
