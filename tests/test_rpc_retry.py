"""A node that goes away for a while: requests retry with backoff, transactions go out exactly once.

A small TCP proxy in front of anvil plays the network: it can refuse connections for a
while, or lose one transaction's request or reply and then go down, which is the case
that tests exactly-once sending (did the node get it or not?).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.chain import Chain
from fl_chain.chain.errors import ChainUnreachable
from fl_chain.identity import Identity

pytestmark = pytest.mark.anvil
SEND = b"eth_sendRawTransaction"


class TcpProxy:
    """Forwards a loopback port to `upstream_port`, and can be cut and restored.

    `lose_next(SEND, "request")` swallows the next request containing `SEND` (the node
    never sees it); `lose_next(SEND, "reply")` forwards it and swallows the answer. Either
    way the proxy then goes down for `outage` seconds.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._armed: tuple[bytes, str, float] | None = None
        self._reply_outage = 0.0
        self.outages = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [listener, *sockets]:
            if sock is not None:
                _close(sock)

    def cut_for(self, seconds: float) -> None:
        self.outages += 1
        self.cut()
        threading.Timer(seconds, self.restore).start()

    def lose_next(self, marker: bytes, what: str, outage: float) -> None:
        self._armed = (marker, what, outage)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets |= {client, upstream}
            lost_reply = threading.Event()
            threading.Thread(target=self._pump_requests, args=(client, upstream, lost_reply), daemon=True).start()
            threading.Thread(target=self._pump_replies, args=(upstream, client, lost_reply), daemon=True).start()

    def _pump_requests(self, client: socket.socket, upstream: socket.socket, lost_reply: threading.Event) -> None:
        while chunk := _receive(client):
            armed = self._armed
            if armed is not None and armed[0] in chunk:
                self._armed = None
                if armed[1] == "request":
                    self.cut_for(armed[2])
                    return
                self._reply_outage = armed[2]
                lost_reply.set()
            if not _send(upstream, chunk):
                return

    def _pump_replies(self, upstream: socket.socket, client: socket.socket, lost_reply: threading.Event) -> None:
        while chunk := _receive(upstream):
            if lost_reply.is_set():
                self.cut_for(self._reply_outage)
                return
            if not _send(client, chunk):
                return


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


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
