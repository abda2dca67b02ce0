"""Error types an operator can act on.

Every failure that a user can cause or fix (bad input, a tampered blob, a refused
commitment, an unreachable node) is raised as a subclass of `FlChainError` with a message
that names the fact, where the fact is known. The command line shows it once, without a
traceback.
"""


class FlChainError(Exception):
    """Base of every expected failure; `exit_code` is what the command line returns."""

    exit_code = 1


class UsageError(FlChainError):
    """The user asked for something malformed (bad arguments, bad config, missing file)."""

    exit_code = 2


class StoreError(FlChainError):
    """The content store could not serve or accept a blob."""


class BlobNotFound(StoreError):
    """No blob with this CID is in the store."""


class BlobCorrupted(StoreError):
    """The stored bytes do not hash to the CID they are stored under."""


class InvalidCid(UsageError):
    """A string is not a CID this project understands."""


class EnvelopeError(FlChainError):
    """An update envelope cannot be opened or does not match what was expected."""


class ChainError(FlChainError):
    """The chain refused a transaction or could not be reached."""
