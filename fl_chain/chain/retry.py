"""An HTTP provider that rides out a node's outage instead of failing the run at once.

A node restarts, a load balancer drops connections, a network blips: every JSON-RPC
request is retried with exponential backoff for up to `retry_seconds`, one progress line
per retry, then fails as `ChainUnreachable`. The one request that must not be repeated
blindly, handing a signed transaction to the node, is tried once: if its answer is lost
the node may already have the transaction, and `Chain` asks before sending it again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import requests
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from fl_chain.chain.errors import ChainUnreachable, ConnectionLost
from fl_chain.errors import ChainError

FIRST_DELAY = 1.0
MAX_DELAY = 16.0
NOT_REPEATED = frozenset({"eth_sendRawTransaction", "evm_increaseTime"})  # not idempotent
_RETRYABLE_STATUS = {429, 502, 503, 504}


def _is_transient(error: Exception) -> bool:
    """Connection failures, timeouts, and the HTTP answers of an overloaded or restarting node."""
    if isinstance(error, requests.HTTPError):
        return error.response is not None and error.response.status_code in _RETRYABLE_STATUS
    return isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError))


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RetryingHTTPProvider(HTTPProvider):
    """web3's HTTP provider with a retry window; `retry_seconds=0` tries each request once."""

    def __init__(
        self, url: str, *, timeout: float, retry_seconds: float, report: Callable[[str], None] = _say
    ) -> None:
        super().__init__(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self.retry_seconds = retry_seconds
        self._report = report

    def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        started = time.monotonic()
        delay = FIRST_DELAY
        while True:
            try:
                return super()._make_request(method, request_data)
            except (requests.RequestException, ConnectionError) as error:
                if isinstance(error, requests.HTTPError) and not _is_transient(error):
                    status = error.response.status_code if error.response is not None else "error"
                    raise ChainError(f"the chain at {self.endpoint_uri} answered {method} with HTTP {status}") from None
                if not _is_transient(error):
                    raise
                kind = type(error).__name__
                if method in NOT_REPEATED:
                    raise ConnectionLost(f"{method} to {self.endpoint_uri} got no answer ({kind})") from None
                remaining = self.retry_seconds - (time.monotonic() - started)
                if remaining <= 0:
                    raise ChainUnreachable(self._gave_up(kind)) from None
                pause = min(delay, remaining)
                self._report(f"chain at {self.endpoint_uri} unreachable ({kind}), retrying in {pause:.3g} s…")
                time.sleep(pause)
                delay = min(2 * delay, MAX_DELAY)

    def _gave_up(self, kind: str) -> str:
        if self.retry_seconds <= 0:
            return f"no Ethereum node answers at {self.endpoint_uri} ({kind})"
        return f"the chain at {self.endpoint_uri} stayed unreachable for {self.retry_seconds:g} s ({kind}); giving up"
