"""The privacy-mode seam: how an update travels from a participant to whoever combines it.

A mode seals a participant's encoded update into the blob it stores and commits, and opens
(or, for a mode whose blobs cannot be read one by one, combines) the blobs the chain names.
The protocol (fl_chain/protocol.py) calls nothing else, so a new mode is a new module in
this package and a `configs/privacy/` entry. The mode is the experiment's `privacy.mode`,
which the federation's task hash binds: every participant, validator and auditor checks
that hash before using it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fl_chain.aggregation import WeightedUpdate
from fl_chain.envelope import ExpectedUpdate, OpenedUpdate, UpdateHeader
from fl_chain.rules import AggregationRule


class PrivacyMode(ABC):
    name: ClassVar[str]
    description: ClassVar[str]  # who can read an update, in one line (docs/threat-model.md says more)

    @abstractmethod
    def seal(self, payload: bytes, header: UpdateHeader, recipients: Sequence[bytes], randomness: bytes) -> bytes:
        """The blob a participant stores: its encoded update (`payload`) for `recipients`
        (X25519 keys), deterministic in `randomness` (a secret of the sender)."""

    @abstractmethod
    def open(self, blob: bytes, opener: X25519PrivateKey, expected: ExpectedUpdate) -> OpenedUpdate:
        """One update, authenticated and checked against what the chain expects of it;
        any failure is an `EnvelopeError` naming it (an exclusion, never a crash)."""

    @abstractmethod
    def read_header(self, blob: bytes) -> UpdateHeader:
        """What a blob claims to be, readable without keys (an auditor's first check)."""

    def combine(self, rule: AggregationRule, updates: Sequence[WeightedUpdate],
                base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The round's global model from its opened, valid updates and its base model."""
        return rule.aggregate(updates, base)
