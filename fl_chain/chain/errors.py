"""Chain failures, each with a message that names the fact an operator can act on."""

from __future__ import annotations

from typing import Any

from fl_chain.errors import ChainError, UsageError


class ChainUnreachable(ChainError):
    """The node at a URL did not answer."""


class ChainTimeout(ChainError):
    """A transaction was sent but no receipt arrived in time."""


class WrongChain(UsageError):
    """The node serves another chain than the one configured."""


class NotAFederation(UsageError):
    """The address holds no Federation contract (or another version of it)."""


class TransactionReverted(ChainError):
    """The contract refused a call; `error` and `args` are its decoded custom error."""

    def __init__(self, message: str, error: str | None = None, args: dict[str, Any] | None = None):
        super().__init__(message)
        self.error = error
        self.error_args = args or {}
