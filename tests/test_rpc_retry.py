"""A node that goes away for a while: requests retry with backoff, transactions go out exactly once.

A small TCP proxy in front of anvil plays the network: it can refuse connections for a
while, or lose one transaction's request or reply and then go down, which is the case
that tests exactly-once sending (did the node get it or not?).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from tcp_proxy import TcpProxy

from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.chain import Chain
from fl_chain.chain.errors import ChainUnreachable
from fl_chain.identity import Identity

pytestmark = pytest.mark.anvil
SEND = b"eth_sendRawTransaction"


@pytest.fixture
def proxy(anvil_node: AnvilNode) -> Iterator[TcpProxy]:
    proxy = TcpProxy(anvil_node.port)
    proxy.restore()
    yield proxy
    proxy.cut()


def _sender(label: str, anvil_node: AnvilNode) -> Identity:
    identity = Identity.derive("rpc retry tests", label)
    rpc.fund(rpc.connect(anvil_node.url), [identity.address])
    return identity


def test_a_call_made_while_the_node_is_down_succeeds_once_it_is_back(
    proxy: TcpProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = rpc.connect(proxy.url, retry_seconds=30)
    before = chain.web3.eth.block_number
    proxy.cut_for(1.5)
    assert chain.web3.eth.block_number >= before
    assert f"chain at {proxy.url} unreachable (ConnectionError), retrying in 1 s…" in capsys.readouterr().err


def test_a_long_outage_is_a_clear_typed_failure(proxy: TcpProxy) -> None:
    chain = rpc.connect(proxy.url, retry_seconds=2)
    proxy.cut()
    with pytest.raises(ChainUnreachable, match=f"the chain at {proxy.url} stayed unreachable for 2 s"):
        chain.web3.eth.get_balance("0x" + "11" * 20)


@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_transaction_sent_across_an_outage_is_mined_exactly_once(
    proxy: TcpProxy, anvil_node: AnvilNode, lost: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sender = _sender(f"across an outage, {lost} lost", anvil_node)
    recipient = Identity.derive("rpc retry tests", f"recipient, {lost} lost").address
    chain = rpc.connect(proxy.url, retry_seconds=30)
    nonce = chain.web3.eth.get_transaction_count(sender.address)
    proxy.lose_next(SEND, lost, outage=1.5)
    receipt = chain.transfer(sender.account, recipient, 12345)
    assert receipt["status"] == 1 and proxy.outages == 1
    direct = rpc.connect(anvil_node.url)
    assert direct.web3.eth.get_transaction_count(sender.address) == nonce + 1
    assert direct.web3.eth.get_balance(recipient) == 12345
    assert "unreachable (ConnectionError), retrying" in capsys.readouterr().err


def test_a_transaction_the_node_dropped_is_handed_to_it_again(anvil_binary: object) -> None:
    with AnvilNode() as node:
        chain = rpc.connect(node.url)
        sender = Identity.derive("rpc retry tests", "dropped from the pool")
        rpc.fund(chain, [sender.address])
        provider = chain.web3.provider
        provider.make_request("evm_setAutomine", [False])
        outcome: dict[str, object] = {}
        sending = threading.Thread(target=lambda: outcome.update(receipt=_transfer(chain, sender)))
        sending.start()
        [pending] = _wait_for(lambda: _pending_hashes(chain))
        provider.make_request("anvil_dropTransaction", [pending])
        assert not _pending_hashes(chain)
        assert _wait_for(lambda: _pending_hashes(chain)) == [pending]  # handed to the node again
        provider.make_request("evm_mine", [])
        sending.join(timeout=60)
        assert outcome["receipt"]["status"] == 1  # type: ignore[index]
        assert chain.web3.eth.get_transaction_count(sender.address) == 1


def _transfer(chain: Chain, sender: Identity) -> object:
    return chain.transfer(sender.account, "0x" + "22" * 20, 1)


def _pending_hashes(chain: Chain) -> list[str]:
    block = chain.web3.eth.get_block("pending")
    return ["0x" + bytes(tx).hex() for tx in block["transactions"]]


def _wait_for(condition, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Polls `condition` until it is truthy (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true")
        time.sleep(0.05)
    return value
