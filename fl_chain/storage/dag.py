"""Walking a stored UnixFS file DAG: its blocks (for CAR export) or its bytes (for `get`).

Both walks take a `get_block` that returns a block's verified bytes or raises
`BlobNotFound`, so they work over any block source. Walks are iterative (no recursion
limit on deep DAGs) and visit children in link order, which is content order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fl_chain.errors import BlobNotFound, InvalidCid, StoreError
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

BlockGetter = Callable[[Cid], bytes]


def decode(cid: Cid, block: bytes | memoryview) -> PBNode:
    """The dag-pb node in `block`, or a `StoreError` naming the CID when it is malformed."""
    try:
        return decode_node(block)
    except (DagPbError, InvalidCid) as error:
        raise StoreError(f"block {cid} is not a valid dag-pb node: {error}") from None


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


def file_content(get_block: BlockGetter, root: Cid) -> Iterator[bytes]:
    """The file's bytes, piece by piece, checked against the root's declared size."""
    stack = [root]
    expected: int | None = None
    total = 0
    while stack:
        cid = stack.pop()
        block = _fetch(get_block, cid, root)
        if cid.codec == RAW:
            total += len(block)
            yield block
            continue
        node = decode(cid, block)
        try:
            unixfs = decode_unixfs(node.data or b"")
        except DagPbError as error:
            raise StoreError(f"block {cid} has no valid UnixFS data: {error}") from None
        if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
            raise StoreError(f"{cid} is a UnixFS node of type {unixfs.type}, not a file")
        if cid == root:
            expected = unixfs.filesize
        if unixfs.data:
            total += len(unixfs.data)
            yield unixfs.data
        stack.extend(reversed([link.cid for link in node.links]))
    if expected is not None and total != expected:
        raise StoreError(f"{root} declares {expected} bytes but its blocks hold {total}")
