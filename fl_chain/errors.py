"""Error types an operator can act on.

Every failure that a user can cause or fix (bad input, a tampered blob, a refused
commitment, an unreachable node) is raised as a subclass of `FlChainError` with a message
that names the fact, where the fact is known. The command line shows it once, without a
traceback.
"""


def printable(value: object, limit: int = 300) -> str:
    """Text from a stranger (a file, a message), safe to show on a terminal or in a report:
    control characters escaped (no terminal escape sequences), cut to `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[:limit] + "…"


class FlChainError(Exception):
    """Base of every expected failure; `exit_code` is what the command line returns."""

    exit_code = 1


class UsageError(FlChainError):
    """The user asked for something malformed (bad arguments, bad config, missing file)."""

    exit_code = 2


class StoreError(FlChainError):
    """The content store could not serve or accept a blob."""


class StoreUnreachable(StoreError):
    """No content-store daemon answers at the configured address.

    Exit status 2, like bad usage: the fix is the operator's (start the daemon, correct the
    address), not the data's.
    """

    exit_code = 2


class BlobNotFound(StoreError):
    """No blob with this CID is in the store."""


class BlobCorrupted(StoreError):
    """The stored bytes do not hash to the CID they are stored under."""


class BlobTooLarge(StoreError):
    """A blob declares more bytes than the reader accepts, so none of its content is read."""


class MalformedDag(StoreError):
    """A blob's blocks are intact but do not form a file this project reads.

    Sizes that do not add up, empty chunks, too many links or levels: what a crafted DAG
    uses to expand a few kilobytes of blocks into terabytes of content.
    """


class InvalidCid(UsageError):
    """A string is not a CID this project understands."""


class EnvelopeError(FlChainError):
    """An update envelope cannot be opened or does not match what was expected."""


class ChainError(FlChainError):
    """The chain refused a transaction or could not be reached."""


class InvalidModelFile(EnvelopeError):
    """Bytes that should hold model tensors are not a safetensors file this project reads."""


class UnsupportedTensor(UsageError):
    """A tensor cannot be encoded: its dtype is not numeric or its name is reserved."""


class InvalidHeader(EnvelopeError):
    """An update header field has the wrong type or form."""


class TamperedEnvelope(EnvelopeError):
    """The envelope's bytes are not what its sender sealed: authentication failed."""


class MalformedEnvelope(TamperedEnvelope):
    """The bytes do not even parse as an envelope (truncated, wrong magic or lengths)."""


class NotARecipient(EnvelopeError):
    """The update was not sealed for this key, so this key cannot open it."""


class WrongRecipients(EnvelopeError):
    """The update was not sealed for exactly the round's recipients (the aggregator and the
    validators frozen when it opened), so not everyone who must judge it could open it."""


class WrongFederation(EnvelopeError):
    """The update was sealed for another federation contract."""


class WrongChain(EnvelopeError):
    """The update was sealed for another chain id."""


class WrongRound(EnvelopeError):
    """The update was sealed for another round."""


class WrongSender(EnvelopeError):
    """The update's declared sender is not the account that committed it."""


class SchemaMismatch(EnvelopeError):
    """The update's tensors do not have the global model's names, dtypes and shapes."""


class NonFiniteValues(EnvelopeError):
    """A tensor in the update holds NaN or infinite values."""


class InconsistentEnvelope(TamperedEnvelope):
    """The content key was wrapped differently for different recipients (or does not match
    the envelope's key commitment): recipients would not all open the same update."""


class OutOfBounds(EnvelopeError):
    """An update is farther from its base model than the federation's norm bound allows."""


class AggregationError(FlChainError):
    """A set of updates cannot be averaged."""


class NoUpdates(AggregationError):
    """There is nothing to average."""


class DuplicateSender(AggregationError):
    """Two updates come from the same participant."""


class InconsistentUpdates(AggregationError):
    """An update's tensor schema differs from the others'."""


class InvalidCar(StoreError):
    """A CAR archive is truncated, malformed or of an unsupported version."""


class DataError(UsageError):
    """A participant's data cannot be used as given (unreadable, malformed or too small)."""
