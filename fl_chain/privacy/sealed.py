"""`privacy=sealed`: each update encrypted for the aggregator and the round's validators.

The envelope (fl_chain/envelope.py) is AES-256-GCM under a fresh content key wrapped for
each recipient by X25519; its header is authenticated and commits to the recipient set.
Whoever holds one of those keys reads each update; the store and everyone else see only
ciphertext and the header.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fl_chain import envelope
from fl_chain.envelope import ExpectedUpdate, OpenedUpdate, UpdateHeader
from fl_chain.privacy.mode import PrivacyMode


class Sealed(PrivacyMode):
    name = "sealed"
    description = "each update is readable by the aggregator and the round's validators, and by no one else"

    def seal(self, payload: bytes, header: UpdateHeader, recipients: Sequence[bytes], randomness: bytes) -> bytes:
        return envelope.seal_encoded(payload, header, recipients, randomness)

    def open(self, blob: bytes, opener: X25519PrivateKey, expected: ExpectedUpdate) -> OpenedUpdate:
        return envelope.open_envelope(blob, opener, expected)

    def read_header(self, blob: bytes) -> UpdateHeader:
        return envelope.read_header(blob)
