"""How the round's requests reach participants and validators: the seam under the coordinator.

The coordinator (fl_chain/round.py) says whom to ask what; a transport carries it (Flower's
Grid in aggregator/, direct calls in fl_chain/inprocess.py) and returns one reply per
request. Nothing a reply says is trusted: the coordinator validates every record it reads
(fl_chain/messages.py) and takes every fact that counts from the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fl_chain.storage.cid import Cid

TRAIN = "train"
ATTEST = "attest"
EVALUATE = "evaluate"


@dataclass(frozen=True)
class Request:
    """One request to one participant. `carried` names the blobs it needs, for transports
    whose parties do not share a content store (they ship them, checked by CID)."""

    participant: str
    kind: str
    payload: dict[str, Any]
    carried: tuple[Cid, ...] = ()


@dataclass(frozen=True)
class Reply:
    """A participant's answer: its records (`content`), or why it gave none (`error`, one line)."""

    participant: str
    kind: str
    content: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Transport(Protocol):
    def participants(self) -> list[str]:
        """The addresses of the members this transport reaches (each proven by a greeting)."""
        ...

    def send(self, requests: Sequence[Request], timeout: float) -> list[Reply]:
        """Delivers the requests and returns one reply per request, in any order; a
        participant that does not answer within `timeout` seconds gets an error reply."""
        ...
