"""CAR v1 export and import: exact header bytes, determinism, and refusal of bad archives."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from fl_chain.errors import BlobCorrupted, BlobNotFound, InvalidCar, UsageError
from fl_chain.storage import RAW, Cid, LocalStore, cid_of, export_car, import_car
from fl_chain.storage.car import encode_header, read_car
from fl_chain.storage.varint import encode_uvarint

CHUNK, LINKS = 512, 3
HELLO = cid_of(b"hello world\n")
Source = tuple[LocalStore, dict[Cid, bytes]]  # a store, and the blobs put into it by CID


def blob(label: str, size: int) -> bytes:
    return hashlib.shake_128(label.encode()).digest(size)


def new_store(path: Path) -> LocalStore:
    return LocalStore(path, chunk_size=CHUNK, max_links=LINKS)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    store = new_store(tmp_path / "source")
    shared = blob("shared", 2 * CHUNK)
    blobs = [blob("first", 20 * CHUNK + 7), shared + blob("second", 9 * CHUNK), shared, b"tiny"]
    return store, {store.put(data): data for data in blobs}


def car_bytes(store: LocalStore, roots: list[Cid]) -> bytes:
    out = io.BytesIO()
    export_car(store, roots, out)
    return out.getvalue()


def sections(car: bytes) -> tuple[list[Cid], list[tuple[Cid, bytes]]]:
    roots, blocks = read_car(io.BytesIO(car))
    return roots, [(cid, bytes(data)) for cid, data in blocks]


def frame(cid: Cid, data: bytes) -> bytes:
    return encode_uvarint(len(cid.to_bytes()) + len(data)) + cid.to_bytes() + data


def make_car(roots: list[Cid], blocks: list[tuple[Cid, bytes]]) -> bytes:
    header = encode_header(roots)
    return encode_uvarint(len(header)) + header + b"".join(frame(c, d) for c, d in blocks)


def test_header_is_canonical_dag_cbor(tmp_path: Path) -> None:
    # {"roots": [CID], "version": 1}; keys sorted length-first; CID = tag 42 over 0x00 + CID.
    expected = (
        bytes.fromhex("a2")  # map(2)
        + bytes.fromhex("65") + b"roots"  # text(5)
        + bytes.fromhex("81")  # array(1)
        + bytes.fromhex("d82a")  # tag(42)
        + bytes.fromhex("5825")  # bytes(37)
        + b"\x00\x01\x55\x12\x20" + hashlib.sha256(b"hello world\n").digest()
        + bytes.fromhex("67") + b"version"  # text(7)
        + bytes.fromhex("01")  # 1
    )
    assert encode_header([HELLO]) == expected
    assert len(expected) == 58
    store = new_store(tmp_path)
    assert store.put(b"hello world\n") == HELLO
    car = car_bytes(store, [HELLO])
    assert car[:1] == b"\x3a" and car[1:59] == expected  # 0x3a = 58
    assert car[59:] == b"\x30" + HELLO.to_bytes() + b"hello world\n"  # 0x30 = 36 + 12


def test_round_trip_into_a_fresh_store(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    roots = list(blobs)
    car = car_bytes(store, roots)
    target = new_store(tmp_path / "target")
    assert import_car(target, io.BytesIO(car)) == roots
    for cid, data in blobs.items():
        assert target.get(cid) == data
        copied = [bytes(block.data) for block in target.iter_dag(cid)]
        assert copied == [bytes(block.data) for block in store.iter_dag(cid)]
    assert car_bytes(target, roots) == car  # same blocks, same archive


def test_export_is_deterministic_and_lists_each_block_once(
    source: Source, tmp_path: Path
) -> None:
    store, blobs = source
    roots = list(blobs)
    car = car_bytes(store, roots)
    assert car_bytes(store, roots) == car
    path = tmp_path / "out.car"
    export_car(store, roots, path)
    assert path.read_bytes() == car

    header_roots, blocks = sections(car)
    assert header_roots == roots
    cids = [cid for cid, _ in blocks]
    assert len(cids) == len(set(cids))
    per_root = [{b.cid for b in store.iter_dag(root)} for root in roots]
    assert set(cids) == set().union(*per_root)
    assert sum(map(len, per_root)) > len(cids)  # leaves shared between blobs were written once
    assert cids[0] == roots[0]  # depth-first, parents before children
    for cid, data in blocks:
        assert hashlib.sha256(data).digest() == cid.digest


def test_import_from_a_path(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    root = next(iter(blobs))
    path = tmp_path / "one.car"
    export_car(store, [root], path)
    target = new_store(tmp_path / "target")
    assert import_car(target, path) == [root]
    assert target.get(root) == blobs[root]


def test_corrupted_block_is_refused(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    root = next(iter(blobs))
    roots, blocks = sections(car_bytes(store, [root]))
    victim, data = blocks[4]
    flipped = bytearray(data)
    flipped[0] ^= 0xFF
    blocks[4] = (victim, bytes(flipped))
    target = new_store(tmp_path / "target")
    with pytest.raises(BlobCorrupted, match=str(victim)):
        import_car(target, io.BytesIO(make_car(roots, blocks)))
    assert not target.has_block(victim)
    assert not target.has(root)


def test_incomplete_car_is_refused(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    root = next(iter(blobs))
    roots, blocks = sections(car_bytes(store, [root]))
    missing = next(cid for cid, _ in blocks if cid.codec == RAW)
    kept = [(cid, data) for cid, data in blocks if cid != missing]
    with pytest.raises(BlobNotFound, match=str(missing)):
        import_car(new_store(tmp_path / "target"), io.BytesIO(make_car(roots, kept)))


def test_truncated_car_is_refused(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    car = car_bytes(store, [next(iter(blobs))])
    for cut in (0, 1, 30, len(car) - 1):
        with pytest.raises(InvalidCar):
            import_car(new_store(tmp_path / f"t{cut}"), io.BytesIO(car[:cut]))


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (bytes.fromhex("a2") + b"\x65roots\x80\x67version\x01", "no roots"),
        (bytes.fromhex("a1") + b"\x67version\x02", "version 2"),
        (bytes.fromhex("a2") + b"\x65roots\x81\x01\x67version\x01", "list of CIDs"),
        (b"\x80", "not a map"),
        (bytes.fromhex("bf") + b"\xff", "indefinite"),
        (encode_header([HELLO]) + b"\x00", "trailing"),
        (encode_header([HELLO])[:-1] + b"\x20", "unsupported CBOR"),  # version -1
    ],
)
def test_bad_headers_are_refused(tmp_path: Path, header: bytes, why: str) -> None:
    car = encode_uvarint(len(header)) + header + frame(HELLO, b"hello world\n")
    with pytest.raises(InvalidCar, match=why):
        import_car(new_store(tmp_path), io.BytesIO(car))


def test_unsupported_block_cid_is_refused(tmp_path: Path) -> None:
    header = encode_header([HELLO])
    cidv0 = b"\x12\x20" + hashlib.sha256(b"x").digest()
    car = encode_uvarint(len(header)) + header + encode_uvarint(len(cidv0) + 1) + cidv0 + b"x"
    with pytest.raises(InvalidCar, match="block section 0"):
        import_car(new_store(tmp_path), io.BytesIO(car))


def test_export_needs_every_block(source: Source, tmp_path: Path) -> None:
    store, blobs = source
    root = next(iter(blobs))
    leaf = next(b.cid for b in store.iter_dag(root) if b.cid.codec == RAW)
    store.block_path(leaf).unlink()
    path = tmp_path / "broken.car"
    with pytest.raises(BlobNotFound, match=str(leaf)):
        export_car(store, [root], path)
    assert not path.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".car") or ".tmp-" in p.name] == []
    with pytest.raises(UsageError):
        export_car(store, [], io.BytesIO())
