"""Blobs carried inside Flower messages, for deployments where every party has its own store.

In a simulation all processes share one content store. In a deployment each organization
keeps its own, so a sealed update travels to the aggregator in the training reply, and the
models a participant needs (the round's base, the global model, the updates a validator
re-aggregates) travel to it in the request. Content addressing makes the transport
irrelevant to integrity: each blob is stored under the CID it hashes to, and one that does
not hash to the CID it was sent under is refused. Which CIDs matter is always read from
the chain, never from the message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from fl_chain.errors import InvalidCid
from fl_chain.protocol import ProtocolError
from fl_chain.storage.blockstore import ContentStore
from fl_chain.storage.cid import Cid
from fl_chain.storage.unixfs import cid_of

RECORD = "blobs"  # the message record that carries {cid: bytes} (a ConfigRecord in Flower)


def pack(store: ContentStore, cids: Iterable[Cid]) -> dict[str, bytes]:
    """The blobs of `cids` from `store`, keyed by CID."""
    return {str(cid): store.get(cid) for cid in dict.fromkeys(cids)}


def unpack(store: ContentStore, record: Mapping[str, object], wanted: Collection[Cid]) -> list[Cid]:
    """Stores the carried blobs whose CIDs are `wanted` (what the chain names for the
    request: anything else could only fill the disk), after checking each hashes to the
    CID it came under."""
    stored = []
    for key, data in record.items():
        try:
            claimed = Cid.parse(str(key))
        except InvalidCid:
            continue
        if claimed not in wanted:
            continue
        if not isinstance(data, bytes):
            raise ProtocolError(f"the blob sent as {claimed} is not bytes")
        found = cid_of(data)
        if found != claimed:
            raise ProtocolError(f"a blob sent as {claimed} hashes to {found}: refused")
        stored.append(store.put(data))
    return stored
