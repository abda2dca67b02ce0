"""LocalStore: kubo-compatible put/get, verified reads, pins, and safe concurrent writers."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from fl_chain.errors import BlobCorrupted, BlobNotFound, StoreError
from fl_chain.storage import DAG_PB, RAW, Cid, ContentStore, LocalStore, cid_of
from fl_chain.storage.blockstore import TEMP_PREFIX
from fl_chain.storage.dagpb import PBLink, PBNode, encode_node

CHUNK, LINKS = 1024, 4  # small, so a few KiB already make multi-level DAGs


def blob(label: str, size: int) -> bytes:
    return hashlib.shake_128(label.encode()).digest(size)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", chunk_size=CHUNK, max_links=LINKS)


def block_files(store: LocalStore) -> list[Path]:
    return sorted(p for p in (store.root / "blocks").rglob("*") if p.is_file())


def test_local_store_is_a_content_store(store: LocalStore) -> None:
    assert isinstance(store, ContentStore)


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 17 * CHUNK + 5, 70 * CHUNK])
def test_put_get_round_trip(store: LocalStore, size: int) -> None:
    data = blob("round trip", size)
    cid = store.put(data)
    assert cid == cid_of(data, chunk_size=CHUNK, max_links=LINKS)
    assert store.has(cid)
    assert store.get(cid) == data


def test_default_store_gives_kubo_cids(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = blob("kubo", 600_000)
    cid = store.put(data)
    assert cid == cid_of(data) and cid.codec == DAG_PB
    hello = store.put(b"hello world\n")
    assert str(hello) == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    assert len(block_files(store)) == 3 + 1 + 1  # 3 leaves + root, and the hello leaf
    assert store.get(cid) == data


def test_blocks_are_files_named_by_cid_without_temp_files(store: LocalStore) -> None:
    data = blob("layout", 9 * CHUNK)
    cid = store.put(data)
    blocks = {block.cid for block in store.iter_dag(cid)}
    assert sorted(block_files(store)) == sorted(store.block_path(c) for c in blocks)
    for c in blocks:
        path = store.block_path(c)
        assert path.name == str(c) and path.parent.name == c.digest[:1].hex()
        assert hashlib.sha256(path.read_bytes()).digest() == c.digest
    store.put(data)  # a second put adds nothing
    assert len(block_files(store)) == len(blocks)
    assert not any(p.name.startswith(TEMP_PREFIX) for p in store.root.rglob("*"))


def test_put_file_streams_to_the_same_cid(store: LocalStore, tmp_path: Path) -> None:
    data = blob("file", 40 * CHUNK + 3)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    cid = store.put_file(path)
    assert cid == store.put(data)
    assert b"".join(store.iter_content(cid)) == data


def test_missing_blob(store: LocalStore) -> None:
    absent = cid_of(b"never stored")
    assert not store.has(absent)
    with pytest.raises(BlobNotFound, match=str(absent)):
        store.get(absent)


def test_flipped_byte_in_a_leaf_is_caught(store: LocalStore) -> None:
    data = blob("tamper", 20 * CHUNK)
    cid = store.put(data)
    leaf = [b.cid for b in store.iter_dag(cid) if b.cid.codec == RAW][7]
    path = store.block_path(leaf)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupted, match=str(leaf)):
        store.get(cid)
    with pytest.raises(BlobCorrupted, match=str(leaf)):
        store.get_block(leaf)


def test_flipped_byte_in_the_root_node_is_caught(store: LocalStore) -> None:
    cid = store.put(blob("root", 5 * CHUNK))
    path = store.block_path(cid)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x80
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupted, match=str(cid)):
        store.get(cid)


def test_flipped_byte_in_a_single_block_blob_is_caught(store: LocalStore) -> None:
    cid = store.put(b"small blob")
    store.block_path(cid).write_bytes(b"small blob!")
    with pytest.raises(BlobCorrupted, match=str(cid)):
        store.get(cid)


def test_deleted_inner_block_is_reported_by_cid(store: LocalStore) -> None:
    cid = store.put(blob("delete", 30 * CHUNK))
    inner = [b.cid for b in store.iter_dag(cid)][5]
    store.block_path(inner).unlink()
    assert not store.has(cid)
    assert store.find_missing(cid) == inner
    with pytest.raises(BlobNotFound) as caught:
        store.get(cid)
    assert str(inner) in str(caught.value) and str(cid) in str(caught.value)


def test_pins(store: LocalStore) -> None:
    assert store.pins() == []
    a, b = store.put(b"a" * 3000), store.put(b"b")
    store.pin(a)
    store.pin(b)
    store.pin(a)  # idempotent
    assert store.pins() == sorted([a, b], key=str)
    store.unpin(a)
    assert store.pins() == [b]
    absent = cid_of(b"absent")
    with pytest.raises(BlobNotFound, match=str(absent)):
        store.pin(absent)
    assert store.pins() == [b]


def test_pin_refuses_an_incomplete_dag(store: LocalStore) -> None:
    cid = store.put(blob("incomplete", 10 * CHUNK))
    leaf = next(b.cid for b in store.iter_dag(cid) if b.cid.codec == RAW)
    store.block_path(leaf).unlink()
    with pytest.raises(BlobNotFound, match=str(leaf)):
        store.pin(cid)
    assert store.pins() == []


def test_put_block_refuses_bytes_that_do_not_match(store: LocalStore) -> None:
    cid = cid_of(b"expected")
    with pytest.raises(BlobCorrupted, match=str(cid)):
        store.put_block(cid, b"something else")
    assert not store.has_block(cid)
    store.put_block(cid, b"expected")
    assert store.get(cid) == b"expected"


def test_a_node_lying_about_its_size_is_refused(store: LocalStore) -> None:
    leaf = store.put(b"x" * 10)
    # UnixFS File claiming 11 bytes over a 10-byte leaf.
    node = encode_node(PBNode((PBLink(leaf, 10),), b"\x08\x02\x18\x0b\x20\x0a"))
    cid = Cid.of_block(DAG_PB, node)
    store.put_block(cid, node)
    with pytest.raises(StoreError, match="declares 11 bytes"):
        store.get(cid)


def test_a_directory_is_not_a_blob(store: LocalStore) -> None:
    node = encode_node(PBNode((), b"\x08\x01"))  # UnixFS Directory, no entries
    cid = Cid.of_block(DAG_PB, node)
    store.put_block(cid, node)
    with pytest.raises(StoreError, match="not a file"):
        store.get(cid)


# -- several processes at once --------------------------------------------------------------

BLOBS = [blob(f"concurrent {i}", (i + 1) * 3 * CHUNK + i) for i in range(8)]
BLOBS.append(bytes(20 * CHUNK))  # identical leaves inside one blob, too


def _writer(root: str, indices: list[int], start: Barrier) -> None:
    store = LocalStore(Path(root), chunk_size=CHUNK, max_links=LINKS)
    start.wait()
    for _ in range(3):
        for index in indices:
            store.put(BLOBS[index])


def _reader(root: str, start: Barrier, stop: Event, seen: Synchronized[int]) -> None:
    """Reads every visible block while writers run: a partial file would fail its hash."""
    store = LocalStore(Path(root))
    start.wait()
    checked = 0
    while True:
        done = stop.is_set()
        for path in (Path(root) / "blocks").rglob("*"):
            if path.is_file() and not path.name.startswith(TEMP_PREFIX):
                store.get_block(Cid.parse(path.name))  # raises BlobCorrupted on a torn write
                checked += 1
        if done:
            break
    seen.value = checked


def test_concurrent_writers_share_one_store(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    context = multiprocessing.get_context()
    start = context.Barrier(5)
    stop, seen = context.Event(), context.Value("i", 0)
    # Writer w puts 5 blobs from 2w on: every blob is written by two or three processes.
    shares = [[(2 * w + k) % len(BLOBS) for k in range(5)] for w in range(4)]
    writers = [context.Process(target=_writer, args=(str(root), share, start)) for share in shares]
    reader = context.Process(target=_reader, args=(str(root), start, stop, seen))
    for process in [*writers, reader]:
        process.start()
    for process in writers:
        process.join(60)
    stop.set()
    reader.join(60)
    assert [p.exitcode for p in writers] == [0, 0, 0, 0]
    assert reader.exitcode == 0 and seen.value > 0

    store = LocalStore(root, chunk_size=CHUNK, max_links=LINKS)
    for data in BLOBS:
        assert store.get(cid_of(data, chunk_size=CHUNK, max_links=LINKS)) == data
    leftovers = [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []
    roots = [cid_of(data, chunk_size=CHUNK, max_links=LINKS) for data in BLOBS]
    expected = {block.cid for root in roots for block in store.iter_dag(root)}
    assert {Cid.parse(p.name) for p in block_files(store)} == expected


def test_atomic_write_leaves_no_temp_file_on_failure(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempted: list[str] = []

    def refuse(src: object, dst: object) -> None:
        attempted.append(Path(str(src)).name)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"doomed")
    assert attempted and attempted[0].startswith(TEMP_PREFIX)
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
    assert not store.has(cid_of(b"doomed"))
