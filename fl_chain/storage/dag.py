"""Walking a stored UnixFS file DAG: its blocks (for CAR export) or its bytes (for `get`).

Both walks take a `get_block` that returns a block's verified bytes or raises
`BlobNotFound`, so they work over any block source. Walks are iterative (no recursion
limit on deep DAGs) and visit children in link order, which is content order.

`walk` lists each block once, so a DAG that links to one child many times stays as small
as its distinct blocks. `file_content` cannot dedupe (a repeated child is repeated
content), so it trusts nothing a node says: the root's declared size must fit the cap, and
every block must be exactly as large as its parent declares, never empty, within
`MAX_DEPTH` levels and `MAX_LINKS` links per node. The bytes produced then add up to the
declared size, a walk reads at most `MAX_DEPTH + 1` blocks per byte of it, and its pending
blocks never exceed `MAX_DEPTH * MAX_LINKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from fl_chain.errors import BlobNotFound, BlobTooLarge, InvalidCid, MalformedDag
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.dagpb import (
    UNIXFS_FILE,
    UNIXFS_RAW,
    DagPbError,
    PBNode,
    decode_node,
    decode_unixfs,
)
from fl_chain.storage.unixfs import Block

MAX_BLOB_BYTES = 2**31 + (16 << 20)
"""The default cap on a blob's declared size: above the largest sealed envelope
(`envelope.MAX_PAYLOAD` plus its header), far below what a crafted DAG can declare."""
MAX_DEPTH = 32
"""How many links below the root a block may sit: kubo's layout puts the leaves of a 2 GiB
file 2 levels down, and `MAX_BLOB_BYTES` of 1-byte chunks at 2 links per node need 32."""
MAX_LINKS = 1024
"""Links a file node may have (kubo's default is 174); bounds what a walk keeps pending."""
MAX_NODE_BYTES = 1 << 20
"""The largest dag-pb file node decoded (kubo imports no bigger block); `MAX_LINKS` links take ~50 KiB."""

BlockGetter = Callable[[Cid], bytes]


def decode(cid: Cid, block: bytes | memoryview) -> PBNode:
    """The dag-pb node in `block`, or `MalformedDag` naming the CID when it is malformed."""
    try:
        return decode_node(block)
    except (DagPbError, InvalidCid) as error:
        raise MalformedDag(f"block {cid} is not a valid dag-pb node: {error}") from None


def links(cid: Cid, block: bytes | memoryview) -> list[Cid]:
    """The CIDs a block links to, in order (none for a raw block)."""
    if cid.codec == RAW:
        return []
    return [link.cid for link in decode(cid, block).links]


def _fetch(get_block: BlockGetter, cid: Cid, root: Cid) -> bytes:
    try:
        return get_block(cid)
    except BlobNotFound:
        if cid == root:
            raise
        raise BlobNotFound(f"block {cid} of {root} is not in the store") from None


def walk(get_block: BlockGetter, root: Cid, seen: set[Cid] | None = None) -> Iterator[Block]:
    """Every block of the DAG under `root`, depth-first, parents before children, each once.

    Blocks already in `seen` are skipped with their subtrees; `seen` is updated, so one
    set shared across several roots lists a block only the first time any root reaches it.
    """
    seen = set() if seen is None else seen
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = _fetch(get_block, cid, root)
        yield Block(cid, block)
        stack.extend(reversed(links(cid, block)))


class _Checked(NamedTuple):
    """One block of a file, its sizes checked: what it declares, holds inline, and links to."""

    size: int
    data: bytes
    children: list[tuple[Cid, int]]


class _Pending(NamedTuple):
    """A block still to read: its CID, the size its parent declares (None for the root), its depth."""

    cid: Cid
    size: int | None
    depth: int


def _named(cid: Cid, root: Cid) -> str:
    """How messages name a block: the root by its CID, any other as a block of the root."""
    return str(cid) if cid == root else f"block {cid} of {root}"


def _check_block(cid: Cid, block: bytes, root: Cid) -> _Checked:
    """A raw leaf is its own content; a dag-pb node must be a UnixFS file whose sizes add up."""
    if cid.codec == RAW:
        return _Checked(len(block), block, [])
    where = _named(cid, root)
    if len(block) > MAX_NODE_BYTES:
        raise MalformedDag(f"{where} is a {len(block)}-byte dag-pb node; a file node has at most {MAX_NODE_BYTES}")
    node = decode(cid, block)
    try:
        unixfs = decode_unixfs(node.data or b"")
    except DagPbError as error:
        raise MalformedDag(f"{where} has no valid UnixFS data: {error}") from None
    if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        raise MalformedDag(f"{where} is a UnixFS node of type {unixfs.type}, not a file")
    links, sizes = node.links, unixfs.blocksizes
    if len(links) > MAX_LINKS:
        raise MalformedDag(f"{where} has {len(links)} links; a file node has at most {MAX_LINKS}")
    if unixfs.filesize is None:
        raise MalformedDag(f"{where} declares no filesize")
    if len(sizes) != len(links):
        raise MalformedDag(f"{where} has {len(links)} links but {len(sizes)} blocksizes")
    if 0 in sizes:
        empty = links[sizes.index(0)].cid
        raise MalformedDag(f"{where} links to {empty} as an empty chunk, which kubo never makes")
    held = len(unixfs.data) + sum(sizes)
    if held != unixfs.filesize:
        raise MalformedDag(f"{where} declares {unixfs.filesize} bytes but its data and blocksizes add up to {held}")
    return _Checked(unixfs.filesize, unixfs.data, [(link.cid, size) for link, size in zip(links, sizes)])


def declared_size(get_block: BlockGetter, cid: Cid) -> int:
    """The size the blob under `cid` declares, from its root block alone (checked to add up)."""
    return _check_block(cid, get_block(cid), cid).size


def file_content(get_block: BlockGetter, root: Cid, max_size: int = MAX_BLOB_BYTES) -> Iterator[bytes]:
    """The file's bytes, piece by piece; `BlobTooLarge` before any leaf if it declares over `max_size`.

    Every block below the root must hold, or declare, exactly what its parent says, so no
    piece is yielded beyond the root's declared size (see the module docstring).
    """
    stack = [_Pending(root, None, 0)]
    while stack:
        cid, expected, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MalformedDag(f"block {cid} of {root} is {depth} levels deep; a file has at most {MAX_DEPTH}")
        checked = _check_block(cid, _fetch(get_block, cid, root), root)
        if expected is None and checked.size > max_size:
            raise BlobTooLarge(f"{root} declares {checked.size} bytes, more than the {max_size}-byte cap")
        if expected is not None and checked.size != expected:
            verb = "holds" if cid.codec == RAW else "declares"
            raise MalformedDag(f"block {cid} of {root} {verb} {checked.size} bytes but its parent says {expected}")
        if checked.data:
            yield checked.data
        stack.extend(_Pending(child, size, depth + 1) for child, size in reversed(checked.children))
