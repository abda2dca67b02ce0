"""Bridge PoCs. The embedded chain's JSON-RPC bridge lives in the `flchain run` process; a
caller that can reach it (any participant of a simulation) must not be able to kill it or
get no reply."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.embedded import EmbeddedChain

SERVE = """
import sys, time
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.embedded import EmbeddedChain
embedded = EmbeddedChain.create(sys.argv[1])  # py-evm raises the recursion limit to 100000 on import
with RpcBridge(embedded.web3) as url:
    print(url, flush=True)
    time.sleep(120)
"""


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as reply:
        return json.loads(reply.read())


@pytest.mark.parametrize("body", [b'{"jsonrpc":"2.0","id":1,"method":["eth_chainId"]}',
                                  b'{"jsonrpc":"2.0","id":1,"method":{"a":1}}'], ids=["method-list", "method-dict"])
def test_a_request_with_a_non_string_method_gets_a_json_rpc_error(tmp_path: Path, body: bytes) -> None:
    embedded = EmbeddedChain.create(tmp_path / "ledger")
    with RpcBridge(embedded.web3) as url:
        reply = post(url, body)  # today: RemoteDisconnected (TypeError: unhashable type, no reply)
        assert "error" in reply


def test_deeply_nested_json_does_not_kill_the_process_serving_the_chain(tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path / "ledger")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), server.stderr.read()
        try:
            post(url, b"[" * 100000 + b"]" * 100000)
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
        assert server.poll() is None, f"the bridge's process died with code {server.returncode} (SIGSEGV is -11)"
        assert post(url, b'{"jsonrpc":"2.0","id":2,"method":"eth_chainId"}')["result"]
    finally:
        server.kill()
        server.wait()
