"""The JSON-RPC bridge serves every method fl-chain's code calls on a web3 connection.

Participants, `flchain verify --rpc` and the history export reach an embedded chain
through the bridge exactly as they would reach a node, so a method it does not serve is a
command that works on anvil and fails on the default chain. The source is scanned for
every `web3.eth` call; each must have its JSON-RPC method in WEB3_TO_RPC (a new call fails
here until it is mapped) and the bridge must serve it.
"""

from __future__ import annotations

import ast
import json
import socket
import struct
import urllib.request
from pathlib import Path

import pytest
from eth_account import Account

from fl_chain.chain import rpc
from fl_chain.chain.bridge import RpcBridge, _handlers
from fl_chain.chain.embedded import EmbeddedChain

REPO = Path(__file__).resolve().parent.parent
WEB3_TO_RPC = {  # web3.py's `eth` calls and attributes, by the JSON-RPC method they send
    "block_number": "eth_blockNumber", "chain_id": "eth_chainId", "gas_price": "eth_gasPrice",
    "get_balance": "eth_getBalance", "get_code": "eth_getCode", "get_transaction_count": "eth_getTransactionCount",
    "get_block": "eth_getBlockByNumber", "call": "eth_call", "estimate_gas": "eth_estimateGas",
    "get_logs": "eth_getLogs", "send_raw_transaction": "eth_sendRawTransaction",
    "get_transaction_receipt": "eth_getTransactionReceipt", "get_transaction": "eth_getTransactionByHash",
    "wait_for_transaction_receipt": "eth_getTransactionReceipt", "max_priority_fee": "eth_maxPriorityFeePerGas",
}
LOCAL = {"contract", "default_account", "account"}  # web3 objects that send nothing themselves
ALWAYS = {"eth_chainId", "net_version", "web3_clientVersion", "eth_maxPriorityFeePerGas", "eth_call"}  # web3's own


def eth_calls_in_source() -> set[str]:
    """Every attribute fl-chain reads off a `….eth` object."""
    names = set()
    for path in (REPO / "fl_chain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "eth":
                names.add(node.attr)
    return names


def test_every_eth_call_in_the_source_is_served_by_the_bridge(tmp_path: Path) -> None:
    used = eth_calls_in_source() - LOCAL
    unmapped = used - WEB3_TO_RPC.keys()
    assert not unmapped, f"map these web3 calls to their JSON-RPC methods and serve them: {sorted(unmapped)}"
    served = set(_handlers(EmbeddedChain.create(tmp_path / "ledger").web3, None))
    assert {WEB3_TO_RPC[name] for name in used} | ALWAYS <= served


def test_a_transaction_is_found_by_its_hash_over_the_bridge(tmp_path: Path) -> None:
    """What `flchain verify --rpc` asks to learn who sent an event's transaction."""
    sender, receiver = Account.create(), Account.create()
    embedded = EmbeddedChain.create(tmp_path / "ledger", funded=[sender.address])
    with RpcBridge(embedded.web3, increase_time=embedded.increase_time) as url:
        chain = rpc.connect(url)
        web3 = chain.web3
        signed = sender.sign_transaction({"to": receiver.address, "value": 1, "gas": 21_000, "nonce": 0,
                                          "chainId": web3.eth.chain_id, "maxFeePerGas": 10**10,
                                          "maxPriorityFeePerGas": 10**9})
        tx_hash = web3.eth.send_raw_transaction(signed.raw_transaction)
        web3.eth.wait_for_transaction_receipt(tx_hash)
        assert web3.eth.get_transaction(tx_hash)["from"] == sender.address
        assert web3.provider.make_request("eth_getTransactionByHash", ["0x" + "00" * 32])["result"] is None
        chain.close()



def test_callers_that_hang_up_or_send_garbage_get_no_traceback_and_the_bridge_keeps_serving(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A killed participant's half-sent request is routine; it must not print a stack trace."""
    embedded = EmbeddedChain.create(tmp_path / "ledger")
    with RpcBridge(embedded.web3) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as half_sent:
            half_sent.sendall(b"POST / HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\"")
            half_sent.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        garbage = urllib.request.urlopen(urllib.request.Request(url, data=b"{not json", method="POST"), timeout=10)
        assert json.loads(garbage.read())["error"]["code"] == -32700
        not_a_request = urllib.request.urlopen(urllib.request.Request(url, data=b"[1, \"x\"]", method="POST"), timeout=10)
        assert [reply["error"]["code"] for reply in json.loads(not_a_request.read())] == [-32600, -32600]
        chain = rpc.connect(url)
        assert chain.web3.eth.block_number >= 0
        chain.close()
    assert "Traceback" not in capfd.readouterr().err
