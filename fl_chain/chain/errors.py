"""Chain failures, each with a message that names the fact an operator can act on."""

from __future__ import annotations

from typing import Any

from fl_chain.errors import ChainError, UsageError


class ChainUnreachable(ChainError):
    """The node at a URL did not answer, even after retrying for the configured window."""


class UnreachableUrl(ChainUnreachable, UsageError):
    """No node answers at the URL given at start-up: bad input, since nothing happened yet."""


class ConnectionLost(ChainError):
    """A request that must not be repeated blindly got no answer: it may or may not have
    reached the node (the caller finds out which, see `Chain`)."""


class ChainTimeout(ChainError):
    """A transaction was sent but no receipt arrived in time."""


class WrongChain(UsageError):
    """The node serves another chain than the one configured."""


class NotAFederation(UsageError):
    """The address holds no Federation contract (or another version of it)."""


class FederationMismatch(UsageError):
    """The federation on chain is not the one a federation file describes."""


class InsufficientFunds(ChainError, UsageError):
    """An account cannot pay for what it is asked to send: bad input when checked before a
    run (exit status 2), and a stop that topping the account up fixes during one."""


class NonceConflict(ChainError):
    """Another transaction from the same account took the nonce of ours."""


class TransactionReverted(ChainError):
    """The contract refused a call; `error` and `args` are its decoded custom error."""

    def __init__(self, message: str, error: str | None = None, args: dict[str, Any] | None = None):
        super().__init__(message)
        self.error = error
        self.error_args = args or {}
