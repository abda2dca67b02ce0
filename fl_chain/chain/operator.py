"""The operator of a run on an existing node (`chain=rpc`): the account that pays, and the
checks made before it pays anything.

A run's accounts (derived from its seed) need gas money. anvil gives them a balance
without a transaction; on any other node the operator, whose v3 keystore the config names,
tops them up by plain transfers. The URL, the chain id, the keystore, its password and the
operator's balance are all checked before the first transaction, so bad input costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from fl_chain.chain import rpc
from fl_chain.chain.accounts import DEFAULT_PASSWORD_ENV, KeystoreError, unlock_keystore
from fl_chain.chain.chain import GAS_HEADROOM, Chain
from fl_chain.chain.errors import InsufficientFunds
from fl_chain.errors import UsageError

TRANSFER_GAS = 21_000
WEI_PER_ETHER = 10**18


@dataclass(frozen=True)
class RpcSettings:
    """The `chain=rpc` config group (configs/chain/rpc.yaml), checked."""

    url: str
    chain_id: int | None
    keystore: Path | None
    password_env: str
    password_file: Path | None
    retry_seconds: float
    fund_wei: int

    @classmethod
    def from_config(cls, chain: Mapping[str, Any]) -> RpcSettings:
        """Checks the group without touching the network: types, and that the keystore and
        its password source exist (their content is checked when the keystore is unlocked)."""
        url = chain.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UsageError(f"chain.url must be an http:// or https:// URL of a JSON-RPC node, got {url!r}")
        chain_id = chain.get("chain_id")
        if chain_id is not None and (isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0):
            raise UsageError(f"chain.chain_id must be a positive integer or null, got {chain_id!r}")
        retry_seconds = chain.get("retry_seconds", 60)
        if isinstance(retry_seconds, bool) or not isinstance(retry_seconds, (int, float)) or retry_seconds < 0:
            raise UsageError(f"chain.retry_seconds must be a number of seconds >= 0, got {retry_seconds!r}")
        settings = cls(
            url=url,
            chain_id=chain_id,
            keystore=Path(chain["keystore"]) if chain.get("keystore") else None,
            password_env=str(chain.get("password_env") or DEFAULT_PASSWORD_ENV),
            password_file=Path(chain["password_file"]) if chain.get("password_file") else None,
            retry_seconds=float(retry_seconds),
            fund_wei=_ether_to_wei(chain.get("fund_ether", 0.1)),
        )
        settings._check_keystore_inputs()
        return settings

    def _check_keystore_inputs(self) -> None:
        if self.keystore is None:
            return
        if not self.keystore.is_file():
            raise KeystoreError(f"keystore file {self.keystore} does not exist")
        if self.password_file is not None and not self.password_file.is_file():
            raise KeystoreError(f"the password file {self.password_file} does not exist")


def connect_operator(chain: Mapping[str, Any]) -> tuple[Chain, LocalAccount | None]:
    """The node the config names and the operator's account (None without a keystore),
    after checking the keystore, its password, that the node answers and its chain id."""
    settings = RpcSettings.from_config(chain)
    operator = None
    if settings.keystore is not None:
        operator = unlock_keystore(settings.keystore, password_env=settings.password_env,
                                   password_file=settings.password_file)
    connected = rpc.connect(settings.url, expected_chain_id=settings.chain_id, retry_seconds=settings.retry_seconds)
    return connected, operator


def fund_accounts(chain: Chain, operator: LocalAccount | None, addresses: Sequence[str], wei: int,
                  confirm: Callable[[str], bool] | None = None) -> None:
    """Gives `addresses` gas money: on anvil for free, elsewhere by transfers from the
    operator that top each account up to `wei`, after checking the operator can pay them all.

    `confirm` is asked before any ether leaves the operator's keystore (with what would be
    spent, and on what); when it says no, nothing is sent."""
    if rpc.is_anvil(chain):
        rpc.fund(chain, addresses)
        return
    if operator is None:
        raise UsageError(f"the node on chain {chain.chain_id} is not anvil, so the run's accounts must be paid: "
                         "name the operator's keystore with chain.keystore=FILE")
    shortfalls = {address: wei - int(chain.web3.eth.get_balance(address)) for address in addresses}
    shortfalls = {address: missing for address, missing in shortfalls.items() if missing > 0}
    if not shortfalls:
        return
    gas = len(shortfalls) * int(TRANSFER_GAS * GAS_HEADROOM) * chain.max_fee_per_gas()
    needed, balance = sum(shortfalls.values()) + gas, int(chain.web3.eth.get_balance(operator.address))
    if balance < needed:
        raise InsufficientFunds(
            f"the operator {operator.address} holds {_ether(balance)} ETH on chain {chain.chain_id}, but topping up "
            f"{len(shortfalls)} accounts to {_ether(wei)} ETH (chain.fund_ether) needs {_ether(needed)} ETH with gas"
        )
    plan = (f"fund {len(shortfalls)} accounts from operator {operator.address} with up to {_ether(needed)} ETH "
            f"(gas included) on chain {chain.chain_id}")
    if confirm is not None and not confirm(plan):
        raise UsageError(f"not confirmed: nothing was spent (would {plan})")
    print(f"[chain] {plan[0].upper()}{plan[1:]}", file=sys.stderr, flush=True)
    for address, missing in shortfalls.items():
        chain.transfer(operator, address, missing)


def _ether_to_wei(value: Any) -> int:
    try:
        ether = Decimal(str(value))
    except InvalidOperation:
        ether = Decimal(-1)
    if isinstance(value, bool) or not ether.is_finite() or ether < 0:
        raise UsageError(f"chain.fund_ether must be an amount of ether >= 0, got {value!r}")
    return int(ether * WEI_PER_ETHER)


def _ether(wei: int) -> str:
    text = f"{Decimal(wei) / WEI_PER_ETHER:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
