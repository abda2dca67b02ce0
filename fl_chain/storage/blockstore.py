"""The embedded content store: kubo-compatible blocks, one file each, under a directory.

Layout under `root`:

    blocks/<first digest byte, hex>/<cid>   one block per file
    pins/<cid>                              an empty file per pinned root

Every file appears by `os.replace` of a finished temporary file in the same directory,
so readers never see a partial block and several processes may `put` into one store at
once (the same block written twice is the same bytes, whichever rename wins). Nothing is
trusted on the way out: `get` re-hashes every block it reads.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from fl_chain.errors import BlobCorrupted, BlobNotFound, InvalidCid, StoreError
from fl_chain.storage import dag
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.dag import MAX_BLOB_BYTES
from fl_chain.storage.unixfs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_LINKS,
    Block,
    Buffer,
    build_file,
    read_chunks,
    split,
)

TEMP_PREFIX = ".tmp-"
MAX_BLOCK_BYTES = 4 << 20  # kubo refuses blocks over 2 MiB; ours are at most 256 KiB


@runtime_checkable
class ContentStore(Protocol):
    """What the protocol needs from a content store, local or an IPFS node."""

    def put(self, data: bytes) -> Cid:
        """Store a blob; returns its kubo-compatible CID."""
        ...

    def get(self, cid: Cid, max_size: int = MAX_BLOB_BYTES) -> bytes:
        """The blob's bytes, verified against `cid`; `BlobTooLarge` if it declares over `max_size`."""
        ...

    def declared_size(self, cid: Cid) -> int:
        """The size the blob declares, read from its root block alone."""
        ...

    def has(self, cid: Cid) -> bool:
        """Whether every block of the blob is present."""
        ...

    def pin(self, cid: Cid) -> None:
        """Keep the blob (it must be complete)."""
        ...


class LocalStore:
    """A directory of blocks; satisfies `ContentStore`."""

    def __init__(
        self,
        root: Path | str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_links: int = DEFAULT_MAX_LINKS,
        fsync: bool = False,
    ) -> None:
        """`chunk_size`/`max_links` other than kubo's defaults give CIDs IPFS would not;
        `max_links` may not exceed `dag.MAX_LINKS`, the widest node a read accepts.

        `fsync=True` also flushes each block to disk before it becomes visible, for stores
        that must survive a power cut; atomicity between processes does not need it.
        """
        if max_links > dag.MAX_LINKS:
            raise ValueError(f"max_links must be at most {dag.MAX_LINKS} (reads refuse wider nodes), got {max_links}")
        self.root = Path(root)
        self.chunk_size = chunk_size
        self.max_links = max_links
        self.fsync = fsync
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._made_dirs: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- blobs -----------------------------------------------------------------------------

    def put(self, data: Buffer) -> Cid:
        """Store `data` as a UnixFS file DAG; returns the root CID."""
        return self._put_blocks(build_file(split(data, self.chunk_size), max_links=self.max_links))

    def put_stream(self, stream: BinaryIO) -> Cid:
        """Store a binary stream's remaining bytes, read in constant memory."""
        chunks = read_chunks(stream, self.chunk_size)
        return self._put_blocks(build_file(chunks, max_links=self.max_links))

    def put_file(self, path: Path | str) -> Cid:
        """Store a file's bytes, streamed."""
        with Path(path).open("rb", buffering=0) as stream:
            return self.put_stream(stream)

    def get(self, cid: Cid, max_size: int = MAX_BLOB_BYTES) -> bytes:
        """The blob's bytes; `BlobNotFound`/`BlobCorrupted` name the block at fault.

        A blob declaring more than `max_size` bytes is refused (`BlobTooLarge`) before any leaf is read.
        """
        return b"".join(self.iter_content(cid, max_size))

    def iter_content(self, cid: Cid, max_size: int = MAX_BLOB_BYTES) -> Iterator[bytes]:
        """The blob's bytes piece by piece, each block verified before it is yielded.

        A fault deep in the DAG is raised only when reached, after the pieces before it;
        `dag.file_content` says what a DAG must satisfy to be read at all.
        """
        return dag.file_content(self.get_block, cid, max_size)

    def declared_size(self, cid: Cid) -> int:
        """The size the blob declares, read from its root block alone (see `dag.declared_size`)."""
        return dag.declared_size(self.get_block, cid)

    def has(self, cid: Cid) -> bool:
        """Whether every block under `cid` is present.

        Leaves are only checked for presence (`get` verifies them); inner nodes are read and
        verified to find their links, so a corrupted one raises `BlobCorrupted`.
        """
        return self.find_missing(cid) is None

    def find_missing(self, cid: Cid) -> Cid | None:
        """The first block under `cid` that is not in the store, or None if the DAG is whole."""
        stack = [cid]
        seen: set[Cid] = set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if current.codec == RAW:
                if not self.has_block(current):
                    return current
                continue
            try:
                block = self.get_block(current)
            except BlobNotFound:
                return current
            stack.extend(reversed(dag.links(current, block)))
        return None

    # -- pins ------------------------------------------------------------------------------

    def pin(self, cid: Cid) -> None:
        """Mark a complete blob as kept; `BlobNotFound` names a missing block."""
        missing = self.find_missing(cid)
        if missing is not None:
            detail = "" if missing == cid else f" (block {missing} is missing)"
            raise BlobNotFound(f"cannot pin {cid}: it is not in the store{detail}")
        self._write_atomic(self._pins / str(cid), b"")

    def unpin(self, cid: Cid) -> None:
        """Remove a pin (the blocks stay); unpinning what is not pinned is a no-op."""
        try:
            os.unlink(self._pins / str(cid))
        except FileNotFoundError:
            pass

    def pins(self) -> list[Cid]:
        """Pinned CIDs, sorted by their string form."""
        try:
            names = os.listdir(self._pins)
        except FileNotFoundError:
            return []
        pinned = []
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            try:
                pinned.append(Cid.parse(name))
            except InvalidCid:
                raise StoreError(f"stray file in {self._pins}: {name}") from None
        return sorted(pinned, key=str)

    # -- blocks ----------------------------------------------------------------------------

    def block_path(self, cid: Cid) -> Path:
        """Where the block for `cid` lives (whether or not it is there)."""
        return self._blocks / cid.digest[:1].hex() / str(cid)

    def has_block(self, cid: Cid) -> bool:
        return os.path.exists(self.block_path(cid))

    def get_block(self, cid: Cid) -> bytes:
        """One block's bytes, after checking they hash to `cid`. A store may come from someone
        else (a published run): a block must be a regular file, not a link, of block size."""
        path = self.block_path(cid)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BlobNotFound(f"{cid} is not in the store") from None
        except OSError as error:  # a link, or an unreadable file, where the block should be
            raise BlobCorrupted(f"block {cid} cannot be read from {path}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise BlobCorrupted(f"block {cid} at {path} is not a regular file")
        with open(descriptor, "rb", buffering=0) as handle:
            data = handle.read(MAX_BLOCK_BYTES + 1)
        if len(data) > MAX_BLOCK_BYTES:
            raise BlobCorrupted(f"block {cid} at {path} is larger than any block ({MAX_BLOCK_BYTES} bytes)")
        actual = sha256(data).digest()
        if actual != cid.digest:
            found = Cid(cid.codec, actual)
            raise BlobCorrupted(
                f"block {cid} is corrupted: its stored bytes hash to {found} "
                f"({self.block_path(cid)})"
            )
        return data

    def put_block(self, cid: Cid, data: Buffer) -> None:
        """Store one block under `cid`, refusing bytes that do not hash to it."""
        actual = sha256(data).digest()
        if actual != cid.digest:
            found = Cid(cid.codec, actual)
            raise BlobCorrupted(f"block {cid} is corrupted: its bytes hash to {found}")
        self._write_block(cid, data)

    def iter_dag(self, cid: Cid, seen: set[Cid] | None = None) -> Iterator[Block]:
        """Every block under `cid`, verified, parents first, each once (see `dag.walk`)."""
        return dag.walk(self.get_block, cid, seen)

    # -- writing ---------------------------------------------------------------------------

    def _put_blocks(self, blocks: Iterator[Block]) -> Cid:
        root: Cid | None = None
        for block in blocks:
            self._write_block(block.cid, block.data)
            root = block.cid
        assert root is not None
        return root

    def _write_block(self, cid: Cid, data: Buffer) -> None:
        path = self.block_path(cid)
        if os.path.exists(path):
            return  # content-addressed: what is there is these bytes (get re-checks)
        self._write_atomic(path, data)

    def _write_atomic(self, path: Path, data: Buffer) -> None:
        directory = path.parent
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)
        temp = directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            # The directory vanished under a cached mkdir (e.g. the store was wiped).
            self._made_dirs.discard(directory)
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(fd, "wb", buffering=0, closefd=True) as handle:
                view = memoryview(data)
                while view:
                    view = view[handle.write(view) :]
                if self.fsync:
                    os.fsync(handle.fileno())
            os.replace(temp, path)
            if self.fsync:
                _fsync_directory(directory)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
