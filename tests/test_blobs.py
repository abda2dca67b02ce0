"""Blobs carried in Flower messages (deployments): stored only under the CID they hash to."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord

from clients import blobs
from fl_chain.protocol import ProtocolError
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.unixfs import cid_of


def test_carried_blobs_round_trip_by_cid(tmp_path: Path) -> None:
    sender, receiver = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    cids = [sender.put(b"sealed update"), sender.put(b"global model")]
    assert blobs.unpack(receiver, blobs.pack(sender, cids)) == cids
    assert [receiver.get(cid) for cid in cids] == [b"sealed update", b"global model"]


def test_a_blob_sent_under_another_cid_is_refused_and_not_stored(tmp_path: Path) -> None:
    receiver = LocalStore(tmp_path / "b")
    forged = ConfigRecord({str(cid_of(b"what was committed")): b"something else"})
    with pytest.raises(ProtocolError, match="hashes to"):
        blobs.unpack(receiver, forged)
    assert not receiver.has(cid_of(b"something else"))
