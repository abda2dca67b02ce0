"""Reading a blob is bounded: crafted DAGs ("DAG bombs") are refused, not expanded.

A bomb reuses blocks: a root whose 174 links all point to one node, which points 174 times
to one 256 KiB leaf, four levels deep, is five blocks (under 300 KB) but declares ~2.4e14
bytes. Import, pin, `has` and CAR export dedupe and stay cheap; `get` must refuse it after
its root (or, when the sizes lie, at the first block that contradicts its parent), in
little time and memory, on the local store and through kubo alike.
"""

from __future__ import annotations

import hashlib
import io
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubo_double import KuboDouble

from fl_chain.envelope import MAX_PAYLOAD
from fl_chain.errors import BlobCorrupted, BlobNotFound, BlobTooLarge, MalformedDag, StoreError
from fl_chain.storage import car
from fl_chain.storage.blockstore import ContentStore, LocalStore
from fl_chain.storage.cid import DAG_PB, RAW, Cid
from fl_chain.storage.dag import MAX_BLOB_BYTES, MAX_DEPTH, MAX_LINKS, MAX_NODE_BYTES, declared_size, file_content
from fl_chain.storage.dagpb import PBLink, PBNode, encode_file_data, encode_node
from fl_chain.storage.ipfs import IpfsStore
from fl_chain.storage.unixfs import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, Block
from fl_chain.storage.varint import encode_uvarint

FAN = DEFAULT_MAX_LINKS
LEAF_SIZE = DEFAULT_CHUNK_SIZE
LEVELS = 4
BOMB_SIZE = FAN**LEVELS * LEAF_SIZE  # ~2.4e14 bytes
QUICK = 2.0  # seconds a refusal may take
SMALL = 50 << 20  # bytes of peak Python memory a refusal may use
TIMEOUT = 2.0


def blob(label: str, size: int) -> bytes:
    return hashlib.shake_128(f"fl-chain dag bounds {label}".encode()).digest(size)


def raw(data: bytes) -> Block:
    return Block(Cid.of_block(RAW, data), data)


def node(links: list[Cid], filesize: int | None, blocksizes: list[int], data: bytes = b"") -> Block:
    """A dag-pb UnixFS File node exactly as told, however its sizes compare to its children."""
    if data:  # Type, Data, filesize, blocksizes (field order as go-unixfs writes them)
        unixfs = b"\x08\x02\x12" + encode_uvarint(len(data)) + data + b"\x18" + encode_uvarint(filesize or 0)
        unixfs += b"".join(b"\x20" + encode_uvarint(size) for size in blocksizes)
    elif filesize is None:
        unixfs = b"\x08\x02" + b"".join(b"\x20" + encode_uvarint(size) for size in blocksizes)
    else:
        unixfs = encode_file_data(filesize, blocksizes)
    block = encode_node(PBNode(tuple(PBLink(cid, 0) for cid in links), unixfs))
    return Block(Cid.of_block(DAG_PB, block), block)


def repeated(child: Cid, size: int, count: int = FAN) -> Block:
    """A node linking `count` times to one child of `size` bytes, declaring the true total."""
    return node([child] * count, size * count, [size] * count)


def bomb(levels: int = LEVELS) -> list[Block]:
    """The reused-block bomb, honest about its size; the root comes last."""
    leaf = raw(blob("bomb leaf", LEAF_SIZE))
    blocks, size = [leaf], LEAF_SIZE
    for _ in range(levels):
        blocks.append(repeated(blocks[-1].cid, size))
        size *= FAN
    return blocks


def lying_bomb() -> list[Block]:
    """The bomb again, but every node says each child holds one byte: the root declares FAN**LEVELS."""
    blocks = [raw(blob("bomb leaf", LEAF_SIZE))]
    size = 1
    for _ in range(LEVELS):
        blocks.append(repeated(blocks[-1].cid, size))
        size *= FAN
    return blocks


def chain(depth: int) -> list[Block]:
    """`depth` single-link nodes over a one-byte leaf: the leaf sits `depth` links below the root."""
    blocks = [raw(b"x")]
    for _ in range(depth):
        blocks.append(node([blocks[-1].cid], 1, [1]))
    return blocks


def stored(store: LocalStore, blocks: list[Block]) -> Cid:
    for block in blocks:
        store.put_block(block.cid, block.data)
    return blocks[-1].cid


def car_of(blocks: list[Block]) -> bytes:
    """A CARv1 written by hand: the root (last block) first, then every block once."""
    header = car.encode_header([blocks[-1].cid])
    sections = [encode_uvarint(len(b.cid.to_bytes()) + len(b.data)) + b.cid.to_bytes() + b.data
                for b in reversed(blocks)]
    return encode_uvarint(len(header)) + header + b"".join(sections)


def refused(read: Callable[[], object], error: type[StoreError], match: str) -> StoreError:
    """Runs `read`, which must raise `error` quickly and in little memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as caught:
            read()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < QUICK, f"refusal took {elapsed:.2f} s"
    assert peak < SMALL, f"refusal peaked at {peak} bytes"
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


# -- the bomb, honest about its size: refused from its root ---------------------------------


def test_bomb_is_refused_from_its_root(store: LocalStore) -> None:
    blocks = bomb()
    root = stored(store, blocks)
    reads: list[Cid] = []

    def counted(cid: Cid) -> bytes:
        reads.append(cid)
        return store.get_block(cid)

    assert sum(len(block.data) for block in blocks) < 300_000
    error = refused(lambda: store.get(root), BlobTooLarge, "more than")
    assert str(error) == f"{root} declares {BOMB_SIZE} bytes, more than the {MAX_BLOB_BYTES}-byte cap"
    refused(lambda: next(store.iter_content(root)), BlobTooLarge, str(BOMB_SIZE))
    refused(lambda: next(file_content(counted, root)), BlobTooLarge, str(root))
    assert reads == [root]
    assert store.declared_size(root) == BOMB_SIZE


def test_bomb_is_cheap_to_pin_walk_and_export(store: LocalStore) -> None:
    blocks = bomb()
    root = stored(store, blocks)
    started = time.perf_counter()
    assert store.has(root)
    store.pin(root)
    assert sorted(block.cid for block in store.iter_dag(root)) == sorted(block.cid for block in blocks)
    exported = io.BytesIO()
    car.export_car(store, [root], exported)
    assert time.perf_counter() - started < QUICK
    assert len(exported.getvalue()) < 300_000 and store.pins() == [root]


@pytest.mark.parametrize("how", ["exported", "hand-written"])
def test_bomb_imported_from_a_car_is_pinned_but_not_read(store: LocalStore, tmp_path: Path, how: str) -> None:
    blocks = bomb()
    if how == "exported":
        path = tmp_path / "bomb.car"
        writer = LocalStore(tmp_path / "source")
        car.export_car(writer, [stored(writer, blocks)], path)
        source: io.BytesIO | Path = path
    else:
        source = io.BytesIO(car_of(blocks))
    started = time.perf_counter()
    (root,) = car.import_car(store, source)
    store.pin(root)
    assert time.perf_counter() - started < QUICK
    assert root == blocks[-1].cid and store.pins() == [root]
    refused(lambda: store.get(root), BlobTooLarge, f"{root} declares {BOMB_SIZE} bytes")


def test_deeper_bomb_is_refused_just_as_fast(store: LocalStore) -> None:
    root = stored(store, bomb(levels=6))  # ~7.3e18 bytes, near what a UnixFS filesize can say
    size = FAN**6 * LEAF_SIZE
    refused(lambda: store.get(root), BlobTooLarge, f"declares {size} bytes")


# -- bombs that lie about their size: refused where a block contradicts its parent ---------


def test_bomb_declaring_a_small_size_is_refused_at_its_first_child(store: LocalStore) -> None:
    blocks = bomb()
    inner = blocks[-2]  # honest: FAN**3 leaves
    root = node([inner.cid] * FAN, FAN, [1] * FAN)
    stored(store, [*blocks[:-1], root])
    error = refused(lambda: store.get(root.cid), MalformedDag, "but its parent says 1")
    assert str(error) == (f"block {inner.cid} of {root.cid} declares {FAN**3 * LEAF_SIZE} bytes "
                          "but its parent says 1")


def test_bomb_lying_at_every_level_is_refused_at_its_first_leaf(store: LocalStore) -> None:
    blocks = lying_bomb()
    root = stored(store, blocks)
    assert store.declared_size(root) == FAN**LEVELS  # under the cap: the walk starts
    leaf = blocks[0].cid
    error = refused(lambda: store.get(root), MalformedDag, "holds")
    assert str(error) == f"block {leaf} of {root} holds {LEAF_SIZE} bytes but its parent says 1"


def test_pieces_before_a_lie_stay_within_the_declared_size(store: LocalStore) -> None:
    first, second = raw(blob("first", LEAF_SIZE)), raw(blob("second", LEAF_SIZE))
    inner = bomb()[-2]  # claimed as one more chunk
    root = node([first.cid, second.cid, inner.cid], 3 * LEAF_SIZE, [LEAF_SIZE] * 3)
    stored(store, [*bomb()[:-1], first, second, root])
    pieces: list[bytes] = []
    with pytest.raises(MalformedDag, match=f"block {inner.cid} of {root.cid} declares"):
        pieces.extend(store.iter_content(root.cid))
    assert pieces == [first.data, second.data]


def test_root_whose_blocksizes_do_not_add_up_is_refused(store: LocalStore) -> None:
    blocks = bomb()
    inner = blocks[-2]
    size = FAN**3 * LEAF_SIZE
    root = node([inner.cid] * FAN, 1000, [size] * FAN)  # true children, small filesize
    stored(store, [*blocks[:-1], root])
    message = f"{root.cid} declares 1000 bytes but its data and blocksizes add up to {FAN * size}"
    assert str(refused(lambda: store.get(root.cid), MalformedDag, "add up to")) == message
    with pytest.raises(MalformedDag, match="add up to"):
        store.declared_size(root.cid)


@pytest.mark.parametrize("sizes", [[LEAF_SIZE] * (FAN - 1), [LEAF_SIZE] * (FAN + 1), []])
def test_blocksizes_must_have_one_entry_per_link(store: LocalStore, sizes: list[int]) -> None:
    leaf = raw(blob("one leaf", LEAF_SIZE))
    root = node([leaf.cid] * FAN, sum(sizes), sizes)
    stored(store, [leaf, root])
    refused(lambda: store.get(root.cid), MalformedDag, f"{root.cid} has {FAN} links but {len(sizes)} blocksizes")


def test_root_without_a_filesize_is_refused(store: LocalStore) -> None:
    leaf = raw(blob("one leaf", LEAF_SIZE))
    root = node([leaf.cid] * FAN, None, [LEAF_SIZE] * FAN)
    stored(store, [leaf, root])
    refused(lambda: store.get(root.cid), MalformedDag, f"^{root.cid} declares no filesize$")


# -- empty chunks, depth, width --------------------------------------------------------------


def test_links_to_empty_chunks_are_refused(store: LocalStore) -> None:
    empty = raw(b"")
    one = raw(b"x")
    mixed = node([one.cid, empty.cid], 1, [1, 0])
    level = node([empty.cid] * FAN, 0, [0] * FAN)
    nothing = [empty, level]
    for _ in range(LEVELS):  # an empty file visited FAN**5 times, if it were walked
        nothing.append(node([nothing[-1].cid] * FAN, 0, [0] * FAN))
    for root in (mixed, level, nothing[-1]):
        stored(store, [empty, one, *nothing, root])
        refused(lambda root=root: store.get(root.cid), MalformedDag, f"^{root.cid} links to .* as an empty chunk")


def test_a_child_declaring_nothing_is_refused(store: LocalStore) -> None:
    hollow = node([], 0, [])  # a valid empty file on its own
    root = node([hollow.cid, raw(b"x").cid], 2, [1, 1])
    stored(store, [hollow, raw(b"x"), root])
    assert store.get(hollow.cid) == b""
    refused(lambda: store.get(root.cid), MalformedDag, f"block {hollow.cid} of {root.cid} declares 0 bytes")


def test_depth_is_limited(store: LocalStore) -> None:
    assert store.get(stored(store, chain(MAX_DEPTH))) == b"x"
    blocks = chain(MAX_DEPTH + 1)
    root = stored(store, blocks)
    error = refused(lambda: store.get(root), MalformedDag, "levels deep")
    assert str(error) == (f"block {blocks[0].cid} of {root} is {MAX_DEPTH + 1} levels deep; "
                          f"a file has at most {MAX_DEPTH}")


def test_width_is_limited(store: LocalStore) -> None:
    one = raw(b"x")
    widest = node([one.cid] * MAX_LINKS, MAX_LINKS, [1] * MAX_LINKS)
    assert store.get(stored(store, [one, widest])) == b"x" * MAX_LINKS
    wider = node([one.cid] * (MAX_LINKS + 1), MAX_LINKS + 1, [1] * (MAX_LINKS + 1))
    stored(store, [wider])
    refused(lambda: store.get(wider.cid), MalformedDag, f"has {MAX_LINKS + 1} links; a file node has at most {MAX_LINKS}")
    with pytest.raises(ValueError, match=f"max_links must be at most {MAX_LINKS}"):
        LocalStore(store.root, max_links=MAX_LINKS + 1)


def test_widest_deepest_valid_file_is_read_in_little_memory() -> None:
    """Every level as wide as allowed, the first link going down: the most a walk keeps pending."""
    one = raw(b"x")
    blocks = {one.cid: one.data}
    top, size = one, 1
    for _ in range(MAX_DEPTH):
        links, sizes = [top.cid] + [one.cid] * (MAX_LINKS - 1), [size] + [1] * (MAX_LINKS - 1)
        size += MAX_LINKS - 1
        top = node(links, size, sizes)
        blocks[top.cid] = top.data
    assert declared_size(blocks.__getitem__, top.cid) == size
    tracemalloc.start()
    try:
        pieces = sum(1 for _ in file_content(blocks.__getitem__, top.cid))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pieces == size == MAX_DEPTH * (MAX_LINKS - 1) + 1
    assert peak < SMALL


def test_oversized_node_is_refused_before_decoding(store: LocalStore) -> None:
    data = bytes(MAX_NODE_BYTES)
    big = node([], len(data), [], data)
    stored(store, [big])
    refused(lambda: store.get(big.cid), MalformedDag, f"is a {len(big.data)}-byte dag-pb node")


# -- the cap on valid blobs ------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1000, LEAF_SIZE, 3 * LEAF_SIZE + 5])
def test_cap_admits_a_blob_of_exactly_its_size(store: LocalStore, size: int) -> None:
    data = blob(f"capped {size}", size)
    cid = store.put(data)
    assert store.declared_size(cid) == size
    assert store.get(cid, max_size=size) == data
    assert b"".join(store.iter_content(cid, max_size=size)) == data
    message = f"^{cid} declares {size} bytes, more than the {size - 1}-byte cap$"
    refused(lambda: store.get(cid, max_size=size - 1), BlobTooLarge, message)


def test_empty_blob_reads_under_a_zero_cap(store: LocalStore) -> None:
    cid = store.put(b"")
    assert store.declared_size(cid) == 0 and store.get(cid, max_size=0) == b""


@pytest.mark.parametrize("size", [0, 1, 50, 64, 65, 17 * 64 + 3, 300 * 64])
def test_small_layouts_still_read_back(tmp_path: Path, size: int) -> None:
    """Multi-level trees of this package's own writer, under the tightest cap."""
    store = LocalStore(tmp_path / "small", chunk_size=64, max_links=3)
    data = blob(f"small layout {size}", size)
    cid = store.put(data)
    assert store.get(cid, max_size=size) == data


def test_default_cap_is_above_the_largest_envelope() -> None:
    assert MAX_PAYLOAD < MAX_BLOB_BYTES < 2**32


def test_missing_and_damaged_blocks_still_say_so(store: LocalStore) -> None:
    data = blob("faults", 3 * LEAF_SIZE)
    cid = store.put(data)
    leaf = next(block.cid for block in store.iter_dag(cid) if block.cid.codec == RAW)
    store.block_path(leaf).write_bytes(b"damaged")
    with pytest.raises(BlobCorrupted, match=f"block {leaf} is corrupted"):
        store.get(cid)
    store.block_path(leaf).unlink()
    with pytest.raises(BlobNotFound, match=f"^block {leaf} of {cid} is not in the store$"):
        store.get(cid)
    absent = raw(b"never stored").cid
    with pytest.raises(BlobNotFound, match=f"^{absent} is not in the store$"):
        store.declared_size(absent)


# -- through kubo ----------------------------------------------------------------------------


@pytest.fixture
def double(tmp_path: Path) -> Iterator[KuboDouble]:
    with KuboDouble(tmp_path / "kubo") as kubo:
        yield kubo


@pytest.fixture
def ipfs(double: KuboDouble) -> Iterator[IpfsStore]:
    with IpfsStore(double.api, timeout=TIMEOUT) as connected:
        yield connected


def test_ipfs_store_is_a_content_store(ipfs: IpfsStore) -> None:
    assert isinstance(ipfs, ContentStore)


def test_ipfs_bomb_is_refused_after_one_block(double: KuboDouble, ipfs: IpfsStore, tmp_path: Path) -> None:
    path = tmp_path / "bomb.car"
    path.write_bytes(car_of(bomb()))
    (root,) = ipfs.import_car(path)  # kubo imports and pins it: its walks dedupe too
    assert ipfs.has(root) and ipfs.pinned(root)
    before = len(double.calls)
    error = refused(lambda: ipfs.get(root), BlobTooLarge, "more than")
    assert str(error) == f"{root} declares {BOMB_SIZE} bytes, more than the {MAX_BLOB_BYTES}-byte cap"
    assert [call.command for call in double.calls[before:]] == ["block/get"]
    assert ipfs.declared_size(root) == BOMB_SIZE


def test_ipfs_lying_bomb_is_refused_at_its_first_leaf(double: KuboDouble, ipfs: IpfsStore) -> None:
    blocks = lying_bomb()
    root = stored(double.store, blocks)
    refused(lambda: ipfs.get(root), MalformedDag, f"block {blocks[0].cid} of {root} holds {LEAF_SIZE} bytes")
    assert len(double.calls_to("block/get")) == LEVELS + 1


def test_ipfs_cap_admits_a_blob_of_exactly_its_size(ipfs: IpfsStore) -> None:
    data = blob("ipfs capped", 3 * LEAF_SIZE + 5)
    cid = ipfs.put(data)
    assert ipfs.declared_size(cid) == len(data)
    assert ipfs.get(cid, max_size=len(data)) == data
    refused(lambda: ipfs.get(cid, max_size=len(data) - 1), BlobTooLarge, f"{cid} declares {len(data)} bytes")


def test_ipfs_blob_in_another_layout_is_refused(double: KuboDouble, ipfs: IpfsStore) -> None:
    data = blob("other layout", 5000)
    cid = LocalStore(double.store.root, chunk_size=1024).put(data)  # valid blocks, not kubo's layout
    with pytest.raises(BlobCorrupted, match=f"returned 5000 bytes for {cid} that hash to .* default layout"):
        ipfs.get(cid)


def test_ipfs_missing_leaf_is_not_found_after_the_timeout(double: KuboDouble, tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "local")
    root = local.put(blob("partial", 2 * LEAF_SIZE))
    double.store.put_block(root, local.get_block(root))  # the root node, without its leaves
    with IpfsStore(double.api, timeout=0.5) as quick:
        assert quick.declared_size(root) == 2 * LEAF_SIZE
        with pytest.raises(BlobNotFound, match=f"^block .* of {root} is not in the store$"):
            quick.get(root)
