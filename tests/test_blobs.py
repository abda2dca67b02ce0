"""Blobs carried in Flower messages (deployments): stored only under the CID they hash to."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord

from fl_chain import blobs
from fl_chain.protocol import ProtocolError
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.unixfs import cid_of


def test_carried_blobs_round_trip_by_cid(tmp_path: Path) -> None:
    sender, receiver = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    cids = [sender.put(b"sealed update"), sender.put(b"global model")]
    assert blobs.unpack(receiver, blobs.pack(sender, cids), set(cids)) == cids
    assert [receiver.get(cid) for cid in cids] == [b"sealed update", b"global model"]


def test_a_blob_sent_under_another_cid_is_refused_and_not_stored(tmp_path: Path) -> None:
    receiver = LocalStore(tmp_path / "b")
    claimed = cid_of(b"what was committed")
    forged = ConfigRecord({str(claimed): b"something else"})
    with pytest.raises(ProtocolError, match="hashes to"):
        blobs.unpack(receiver, forged, {claimed})
    assert not receiver.has(cid_of(b"something else"))


def test_blobs_the_chain_does_not_name_for_the_request_are_dropped(tmp_path: Path) -> None:
    """A flood of valid blobs under their own CIDs would otherwise fill a site's disk."""
    sender, receiver = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    named, junk = sender.put(b"the round's model"), [sender.put(bytes([i]) * 1000) for i in range(20)]
    assert blobs.unpack(receiver, blobs.pack(sender, [named, *junk]), {named}) == [named]
    assert not any(receiver.has(cid) for cid in junk)
