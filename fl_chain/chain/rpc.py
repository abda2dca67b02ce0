"""Connects to a JSON-RPC node (anvil, Geth, Besu) and checks it is the chain expected.

At start-up a node that does not answer is bad input (a wrong URL, a node not started):
it fails at once. Once connected, requests ride out outages for `retry_seconds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from requests.exceptions import RequestException
from web3 import Web3
from web3.exceptions import Web3RPCError

from fl_chain.chain.bridge import CLIENT_VERSION
from fl_chain.chain.chain import Chain
from fl_chain.chain.errors import ChainUnreachable, UnreachableUrl, WrongChain
from fl_chain.chain.retry import RetryingHTTPProvider
from fl_chain.errors import ChainError

DEFAULT_RETRY_SECONDS = 60.0  # how long a connected node may be unreachable before a run stops
DEVELOPMENT_NODES = ("anvil", CLIENT_VERSION)  # nodes whose clock tests may move


def connect(url: str, *, expected_chain_id: int | None = None, timeout: float = 10.0,
            receipt_timeout: float = 120.0, retry_seconds: float = DEFAULT_RETRY_SECONDS,
            on_close: Callable[[], None] | None = None, development: bool = False) -> Chain:
    """A `Chain` over HTTP; fails early and clearly if the node is down or on another chain.

    `development` says the caller started this node for itself (its own anvil, or the
    bridge to its embedded chain): only there may seed-derived accounts act."""
    provider = RetryingHTTPProvider(url, timeout=timeout, retry_seconds=0)
    web3 = Web3(provider)
    try:
        chain_id = int(web3.eth.chain_id)
    except ChainUnreachable as error:
        raise UnreachableUrl(str(error)) from None
    except (RequestException, ValueError, Web3RPCError, ChainError) as error:  # a bad URL, or no JSON-RPC node
        detail = str(error).splitlines()[0] if str(error) else ""
        raise UnreachableUrl(f"{url} is not an Ethereum JSON-RPC endpoint ({type(error).__name__}: {detail})") from None
    provider.retry_seconds = retry_seconds
    if expected_chain_id is not None and chain_id != expected_chain_id:
        raise WrongChain(f"the node at {url} serves chain {chain_id}, not the expected chain {expected_chain_id}")
    is_dev_node = _client_version(web3).startswith(DEVELOPMENT_NODES)
    return Chain(
        web3,
        backend="rpc",
        increase_time=(lambda seconds: _increase_time(web3, seconds)) if is_dev_node else None,
        receipt_timeout=receipt_timeout,
        on_close=on_close,
        development=development,
    )


def is_anvil(chain: Chain) -> bool:
    """Whether the node is anvil, which can give accounts a balance without a transaction."""
    return _client_version(chain.web3).startswith("anvil")


def fund(chain: Chain, addresses: Sequence[str], wei: int = 10**24) -> None:
    """Gives accounts a balance on a development node (anvil), without a transaction."""
    for address in addresses:
        response = chain.web3.provider.make_request("anvil_setBalance", [address, hex(wei)])
        if "error" in response:
            raise WrongChain(f"cannot fund {address}: the node is not a development node ({response['error']})")


def _client_version(web3: Web3) -> str:
    try:
        return str(web3.provider.make_request("web3_clientVersion", []).get("result", ""))
    except (RequestException, OSError, ValueError):
        return ""


def _increase_time(web3: Web3, seconds: int) -> None:
    web3.provider.make_request("evm_increaseTime", [int(seconds)])
    web3.provider.make_request("evm_mine", [])
