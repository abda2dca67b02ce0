"""Starts and stops a local anvil node, for tests and for users trying the RPC path.

anvil ships inside the npm package @foundry-rs/anvil-linux-amd64, which scripts/setup.sh
installs into node_modules; FLCHAIN_ANVIL or PATH can point elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from requests.exceptions import RequestException
from web3 import HTTPProvider, Web3

from fl_chain.chain.errors import ChainUnreachable
from fl_chain.errors import UsageError

DEV_MNEMONIC = "test test test test test test test test test test test junk"
_PACKAGED = Path(__file__).resolve().parents[2] / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def find_anvil() -> Path:
    candidates = [os.environ.get("FLCHAIN_ANVIL"), shutil.which("anvil"), str(_PACKAGED)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise UsageError("anvil is not installed: run scripts/setup.sh (npm tools) or set FLCHAIN_ANVIL")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class AnvilNode:
    """A local anvil on a free loopback port: `with AnvilNode() as node: node.url`."""

    def __init__(self, *, chain_id: int = 31337, port: int | None = None, startup_timeout: float = 30.0,
                 load_state: Path | None = None, dump_state: Path | None = None) -> None:
        """`dump_state` keeps the chain (blocks, logs, state) in a file when the node stops;
        `load_state` starts from such a file, e.g. to audit a finished deployment."""
        self.chain_id = chain_id
        self.load_state, self.dump_state = load_state, dump_state
        self.port = port or _free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AnvilNode:
        command = [
            str(find_anvil()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--mnemonic", DEV_MNEMONIC,
            "--gas-limit", "60000000",
            "--silent",
            *(["--load-state", str(self.load_state)] if self.load_state else []),
            *(["--dump-state", str(self.dump_state)] if self.dump_state else []),
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        web3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 1}))
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise ChainUnreachable(f"anvil exited at start (code {self._process.returncode}): {stderr.strip()[-500:]}")
            try:
                if int(web3.eth.chain_id) == self.chain_id:
                    return
            except (RequestException, OSError):
                time.sleep(0.1)
        self.stop()
        raise ChainUnreachable(f"anvil did not answer on {self.url} within {self.startup_timeout:.0f} s")
