"""Serves an in-process chain over JSON-RPC on loopback, for participants in other processes.

Simulated participants run in their own processes (Flower's Ray actors), yet must read
the chain and send their own transactions exactly as they would to a real node. This
small server answers the standard `eth_*` methods fl-chain's web3 calls need (every one:
tests/test_bridge.py pins the list), by
calling the in-process web3 and encoding the answers as JSON-RPC. It listens on
127.0.0.1 only and serializes access, since the embedded EVM is not thread-safe.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound

from fl_chain.jsonfiles import parse_json

_QUANTITY_FIELDS = {"gas", "gasPrice", "value", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "chainId", "type"}


def _to_json(value: Any) -> Any:
    """web3's Python values as JSON-RPC: integers as quantities, bytes as hex data."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray, HexBytes)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON-RPC")


def _block(identifier: Any) -> Any:
    if isinstance(identifier, str) and identifier.startswith("0x"):
        return int(identifier, 16)
    return identifier or "latest"


def _transaction(fields: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _QUANTITY_FIELDS and isinstance(value, str):
            parsed[key] = int(value, 16)
        elif key in ("to", "from") and value:
            parsed[key] = to_checksum_address(value)
        elif key == "input":
            parsed["data"] = value
        else:
            parsed[key] = value
    return parsed


def _log_filter(fields: dict[str, Any]) -> dict[str, Any]:
    parsed = dict(fields)
    for key in ("fromBlock", "toBlock"):
        if key in parsed:
            parsed[key] = _block(parsed[key])
    if isinstance(parsed.get("address"), str):
        parsed["address"] = to_checksum_address(parsed["address"])
    return parsed


def _receipt_or_none(web3: Web3, tx_hash: str) -> Any:
    try:
        return web3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        return None


def _transaction_or_none(web3: Web3, tx_hash: str) -> Any:
    try:
        return web3.eth.get_transaction(tx_hash)
    except TransactionNotFound:
        return None


CLIENT_VERSION = "fl-chain-embedded"


def _handlers(web3: Web3, increase_time: Callable[[int], None] | None) -> dict[str, Callable[..., Any]]:
    eth = web3.eth
    development = {}
    if increase_time is not None:
        development = {
            "evm_increaseTime": lambda seconds: increase_time(int(seconds, 16) if isinstance(seconds, str) else seconds),
            "evm_mine": lambda *_: web3.provider.make_request("evm_mine", [])["result"],
        }
    return development | {
        "web3_clientVersion": lambda: CLIENT_VERSION,
        "eth_chainId": lambda: eth.chain_id,
        "net_version": lambda: str(eth.chain_id),
        "eth_blockNumber": lambda: eth.block_number,
        "eth_gasPrice": lambda: eth.gas_price,
        "eth_maxPriorityFeePerGas": lambda: 10**9,
        "eth_getBalance": lambda address, block="latest": eth.get_balance(to_checksum_address(address), _block(block)),
        "eth_getCode": lambda address, block="latest": eth.get_code(to_checksum_address(address), _block(block)),
        "eth_getTransactionCount": lambda address, block="latest": eth.get_transaction_count(
            to_checksum_address(address), _block(block)
        ),
        "eth_getBlockByNumber": lambda block, full=False: eth.get_block(_block(block), full),
        "eth_call": lambda tx, block="latest": eth.call(_transaction(tx), _block(block)),
        "eth_estimateGas": lambda tx, block=None: eth.estimate_gas(_transaction(tx)),
        "eth_getLogs": lambda log_filter: eth.get_logs(_log_filter(log_filter)),
        "eth_sendRawTransaction": lambda raw: eth.send_raw_transaction(raw),
        "eth_getTransactionReceipt": lambda tx_hash: _receipt_or_none(web3, tx_hash),
        "eth_getTransactionByHash": lambda tx_hash: _transaction_or_none(web3, tx_hash),
    }


class _QuietServer(ThreadingHTTPServer):
    """Drops a caller that hangs up mid-request without a traceback.

    A participant process that is killed, or times out and closes its socket, is routine in
    a run; socketserver's default would print a stack trace into the run's output for each.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        print(f"rpc bridge: request from {client_address[0]} failed: {type(error).__name__}: {error}", file=sys.stderr)


class RpcBridge:
    """`with RpcBridge(web3) as url:` serves `web3`'s chain at `url` until the block ends.

    With `increase_time`, it also answers evm_increaseTime and evm_mine, like anvil.
    """

    def __init__(self, web3: Web3, increase_time: Callable[[int], None] | None = None) -> None:
        handlers = _handlers(web3, increase_time)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a round makes a hundred small requests
            disable_nagle_algorithm = True  # else small replies wait on delayed ACKs

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps(_reply_to(self.rfile.read(int(self.headers.get("Content-Length") or 0)))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                """Quiet: one line per request would drown the run's progress output."""

        def _reply_to(body: bytes) -> Any:
            try:
                request = parse_json(body)  # depth-checked: py-evm lifts the recursion limit this process runs under
            except ValueError as error:
                return {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": f"not JSON: {error}"}}
            if isinstance(request, list):
                return [_answer(item) for item in request]
            return _answer(request)

        def _answer(request: Any) -> dict[str, Any]:
            if not (isinstance(request, dict) and isinstance(request.get("method", ""), str)):
                return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "not a JSON-RPC request"}}
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
            handler = handlers.get(request.get("method", ""))
            if handler is None:
                reply["error"] = {"code": -32601, "message": f"method {request.get('method')} is not served"}
                return reply
            try:
                with lock:
                    reply["result"] = _to_json(handler(*request.get("params", [])))
            except ContractLogicError as error:
                reply["error"] = {"code": 3, "message": "execution reverted", "data": error.data}
            except Exception as error:  # noqa: BLE001 - every failure goes back to the caller
                reply["error"] = {"code": -32000, "message": f"{type(error).__name__}: {error}"}
            return reply

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-bridge", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
