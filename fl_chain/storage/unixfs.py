"""Cut content into the exact UnixFS DAG that `ipfs add --cid-version=1` builds.

kubo's defaults (and ipfs-unixfs-importer's, with the same explicit options): fixed-size
chunks of 256 KiB, each stored as a raw leaf; one chunk (including the empty content) is
its own raw-leaf CID; more chunks hang from a balanced tree of dag-pb UnixFS File nodes
with at most 174 links each, every leaf at the same depth. Matching this layout is what
lets a blob stored here resolve to the same CID on real IPFS.

Leaves are hashed in batches on a thread pool (hashlib releases the GIL), and nodes are
emitted as soon as a level fills, so content streams through in constant memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from fl_chain.hashing import sha256_each
from fl_chain.storage.cid import DAG_PB, RAW, Cid
from fl_chain.storage.dagpb import PBLink, PBNode, encode_file_data, encode_node

DEFAULT_CHUNK_SIZE = 262_144
DEFAULT_MAX_LINKS = 174

Buffer = bytes | bytearray | memoryview

_HASH_BATCH_CHUNKS = 32  # chunks hashed per pool round: 8 MiB at the default size
_READ_BYTES = 8 << 20  # bytes read from a stream at once


class Block(NamedTuple):
    """One block of a DAG: its CID and its bytes (raw content or an encoded node)."""

    cid: Cid
    data: Buffer


@dataclass(frozen=True)
class _Child:
    """What a parent needs to know about a child: its CID, Tsize and content length."""

    cid: Cid
    tsize: int
    filesize: int


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")


def _check_max_links(max_links: int) -> None:
    if max_links < 2:  # one link per node would never reduce to a root
        raise ValueError(f"max_links must be at least 2, got {max_links}")


def split(data: Buffer, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[memoryview]:
    """Fixed-size chunks of in-memory content (no copies); empty content is one empty chunk."""
    _check_chunk_size(chunk_size)
    view = memoryview(data).cast("B")
    if len(view) == 0:
        yield view
        return
    for offset in range(0, len(view), chunk_size):
        yield view[offset : offset + chunk_size]


def read_chunks(stream: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[memoryview]:
    """Fixed-size chunks of a stream, read in large pieces; an empty stream is one empty chunk."""
    _check_chunk_size(chunk_size)
    piece = max(1, _READ_BYTES // chunk_size) * chunk_size
    emitted = False
    while True:
        buffer = bytearray(piece)  # fresh each time: yielded views must stay valid
        filled = _read_full(stream, memoryview(buffer))
        view = memoryview(buffer)[:filled]
        for offset in range(0, filled, chunk_size):
            emitted = True
            yield view[offset : offset + chunk_size]
        if filled < piece:
            break
    if not emitted:
        yield memoryview(b"")


def _read_full(stream: BinaryIO, into: memoryview) -> int:
    """Fill `into` unless the stream ends first (pipes return short reads)."""
    filled = 0
    while filled < len(into):
        count = stream.readinto(into[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def _batched(chunks: Iterable[Buffer], size: int) -> Iterator[list[Buffer]]:
    batch: list[Buffer] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _file_node(children: list[_Child]) -> tuple[Block, _Child]:
    """The dag-pb UnixFS File node over `children`, and how its parent links to it."""
    filesize = sum(child.filesize for child in children)
    data = encode_file_data(filesize, [child.filesize for child in children])
    links = tuple(PBLink(child.cid, child.tsize) for child in children)
    block = encode_node(PBNode(links, data))
    cid = Cid.of_block(DAG_PB, block)
    tsize = len(block) + sum(child.tsize for child in children)
    return Block(cid, block), _Child(cid, tsize, filesize)


def build_file(chunks: Iterable[Buffer], *, max_links: int = DEFAULT_MAX_LINKS) -> Iterator[Block]:
    """Every block of the balanced file DAG over `chunks`, children first; the root comes last.

    Matches ipfs-unixfs-importer's balanced layout: each level is cut into runs of
    `max_links` and every run becomes a node, until one node (the root) is left; a file of
    one chunk is that raw leaf itself. A full run is turned into its node at once, so only
    one partial run per level is ever held. `chunks` must be non-empty, except that empty
    content is one empty chunk (what `split` and `read_chunks` give).
    """
    _check_max_links(max_links)
    levels: list[list[_Child]] = [[]]
    leaves = 0
    for batch in _batched(chunks, _HASH_BATCH_CHUNKS):
        for chunk, digest in zip(batch, sha256_each(batch)):
            leaf = Cid(RAW, digest)
            yield Block(leaf, chunk)
            leaves += 1
            levels[0].append(_Child(leaf, len(chunk), len(chunk)))
            depth = 0
            while len(levels[depth]) == max_links:
                block, child = _file_node(levels[depth])
                yield block
                levels[depth] = []
                if depth + 1 == len(levels):
                    levels.append([])
                levels[depth + 1].append(child)
                depth += 1
    if leaves == 0:
        raise ValueError("build_file needs at least one chunk (an empty file is one empty chunk)")
    # Close the partial runs bottom-up. A level that alone holds one entry is the root.
    depth = 0
    while True:
        pending = levels[depth]
        above = any(levels[depth + 1 :])
        if len(pending) == 1 and not above:
            return
        if pending:
            block, child = _file_node(pending)
            yield block
            if depth + 1 == len(levels):
                levels.append([])
            levels[depth + 1].append(child)
            levels[depth] = []
        depth += 1


def _root(blocks: Iterable[Block]) -> Cid:
    root: Cid | None = None
    for block in blocks:
        root = block.cid
    assert root is not None
    return root


def cid_of(
    data: Buffer, *, chunk_size: int = DEFAULT_CHUNK_SIZE, max_links: int = DEFAULT_MAX_LINKS
) -> Cid:
    """The CID `ipfs add --cid-version=1` gives for these bytes (with these chunking knobs)."""
    _check_chunk_size(chunk_size)
    return _root(build_file(split(data, chunk_size), max_links=max_links))


def cid_of_stream(
    stream: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE, max_links: int = DEFAULT_MAX_LINKS
) -> Cid:
    """Like `cid_of`, reading a binary stream to its end in constant memory."""
    _check_chunk_size(chunk_size)
    return _root(build_file(read_chunks(stream, chunk_size), max_links=max_links))


def cid_of_file(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_links: int = DEFAULT_MAX_LINKS,
) -> Cid:
    """Like `cid_of`, for a file on disk, streamed."""
    with Path(path).open("rb", buffering=0) as stream:
        return cid_of_stream(stream, chunk_size=chunk_size, max_links=max_links)
