"""CAR v1 archives: move whole DAGs between stores (and to or from kubo's `ipfs dag import`).

Layout (https://ipld.io/specs/transport/car/carv1/): a varint-prefixed dag-cbor header
`{"roots": [CID, ...], "version": 1}`, then one varint-prefixed section per block, holding
the binary CID followed by the block bytes. Export walks each root depth-first, parents
before children, and writes each block once, so the same roots always give the same
bytes. Import trusts nothing: every block must hash to its CID and every root must end up
complete in the store.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import BinaryIO, Protocol

from fl_chain.errors import BlobCorrupted, BlobNotFound, InvalidCar, InvalidCid, UsageError
from fl_chain.storage import dag
from fl_chain.storage.cid import Cid
from fl_chain.storage.varint import VarintError, encode_uvarint, read_uvarint

CAR_VERSION = 1
MAX_SECTION_BYTES = 16 << 20  # far above any block this package writes; stops garbage lengths
MAX_HEADER_BYTES = 1 << 20
_CID_TAG = 42


class BlockStore(Protocol):
    """The block-level access CAR export and import need (`LocalStore` has it)."""

    def get_block(self, cid: Cid) -> bytes: ...

    def put_block(self, cid: Cid, data: bytes | bytearray | memoryview) -> None: ...

    def find_missing(self, cid: Cid) -> Cid | None: ...


# -- dag-cbor, only as much as a CAR header needs -------------------------------------------


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | info,)) + value.to_bytes(size, "big")
    raise ValueError(f"CBOR length out of range: {value}")


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def encode_header(roots: Sequence[Cid]) -> bytes:
    """The dag-cbor header block (keys in dag-cbor order: shorter first, then bytewise)."""
    parts = [_cbor_head(5, 2), _cbor_text("roots"), _cbor_head(4, len(roots))]
    for root in roots:
        link = b"\x00" + root.to_bytes()  # tag-42 byte strings carry a 0x00 multibase prefix
        parts += [_cbor_head(6, _CID_TAG), _cbor_head(2, len(link)), link]
    parts += [_cbor_text("version"), _cbor_head(0, CAR_VERSION)]
    return b"".join(parts)


class _CborReader:
    """Decodes the dag-cbor subset a CAR header uses: ints, strings, arrays, maps, CIDs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise InvalidCar("CAR header is truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _head(self) -> tuple[int, int]:
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info > 27:
            raise InvalidCar("CAR header uses indefinite-length or reserved CBOR items")
        return major, int.from_bytes(self._take(1 << (info - 24)), "big")

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise InvalidCar("CAR header is nested too deeply")
        major, value = self._head()
        if major == 0:
            return value
        if major == 2:
            return self._take(value)
        if major == 3:
            try:
                return self._take(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidCar("CAR header holds invalid UTF-8") from None
        if major == 4:
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            entries: dict[object, object] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str) or key in entries:
                    raise InvalidCar("CAR header map keys must be distinct strings")
                entries[key] = self.item(depth + 1)
            return entries
        if major == 6 and value == _CID_TAG:
            link = self.item(depth + 1)
            if not isinstance(link, bytes) or not link.startswith(b"\x00"):
                raise InvalidCar("CAR header CID is not a 0x00-prefixed byte string")
            try:
                return Cid.from_bytes(link[1:])
            except InvalidCid as error:
                raise InvalidCar(f"CAR header root: {error}") from None
        raise InvalidCar(f"CAR header holds an unsupported CBOR item (major type {major})")


def decode_header(data: bytes) -> list[Cid]:
    """The roots of a CARv1 header; anything but version 1 with at least one root is refused."""
    reader = _CborReader(data)
    header = reader.item()
    if reader.pos != len(data):
        raise InvalidCar("trailing bytes after the CAR header")
    if not isinstance(header, dict):
        raise InvalidCar("CAR header is not a map")
    version = header.get("version")
    if version != CAR_VERSION:
        raise InvalidCar(f"unsupported CAR version {version!r} (only CARv1 is supported)")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(root, Cid) for root in roots):
        raise InvalidCar("CAR header roots must be a list of CIDs")
    if not roots:
        raise InvalidCar("CAR header has no roots")
    return list(roots)  # type: ignore[arg-type]


# -- export ---------------------------------------------------------------------------------


def iter_car(store: BlockStore, roots: Sequence[Cid]) -> Iterator[bytes]:
    """The CAR's bytes in pieces: header, then each block once, depth-first from each root."""
    if not roots:
        raise UsageError("a CAR needs at least one root")
    header = encode_header(roots)
    yield encode_uvarint(len(header)) + header
    seen: set[Cid] = set()
    for root in roots:
        for cid, data in dag.walk(store.get_block, root, seen):
            cid_bytes = cid.to_bytes()
            yield encode_uvarint(len(cid_bytes) + len(data)) + cid_bytes
            yield data


def export_car(store: BlockStore, roots: Sequence[Cid], out: BinaryIO | Path | str) -> None:
    """Write the DAGs under `roots` as a CARv1 to a stream, or atomically to a path."""
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with temp.open("wb") as handle:
                export_car(store, roots, handle)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return
    for piece in iter_car(store, roots):
        out.write(piece)


# -- import ---------------------------------------------------------------------------------


def _read_exact(stream: BinaryIO, count: int, what: str) -> bytes:
    data = stream.read(count)
    while len(data) < count:
        more = stream.read(count - len(data))
        if not more:
            raise InvalidCar(f"CAR is truncated in {what}")
        data += more
    return data


def _read_length(stream: BinaryIO, what: str) -> int | None:
    try:
        return read_uvarint(stream)
    except VarintError as error:
        raise InvalidCar(f"bad length prefix of {what}: {error}") from None


def read_car(stream: BinaryIO) -> tuple[list[Cid], Iterator[tuple[Cid, memoryview]]]:
    """The roots, and an iterator over (cid, block bytes) as stored (not yet verified)."""
    length = _read_length(stream, "the header")
    if length is None:
        raise InvalidCar("CAR is empty")
    if not 0 < length <= MAX_HEADER_BYTES:
        raise InvalidCar(f"CAR header length {length} is out of range")
    roots = decode_header(_read_exact(stream, length, "the header"))
    return roots, _sections(stream)


def _sections(stream: BinaryIO) -> Iterator[tuple[Cid, memoryview]]:
    index = 0
    while True:
        what = f"block section {index}"
        length = _read_length(stream, what)
        if length is None:
            return
        if not 0 < length <= MAX_SECTION_BYTES:
            raise InvalidCar(f"{what} has out-of-range length {length}")
        section = memoryview(_read_exact(stream, length, what))
        try:
            cid, offset = Cid.read(section)
        except InvalidCid as error:
            raise InvalidCar(f"{what}: {error}") from None
        yield cid, section[offset:]
        index += 1


@contextmanager
def _opened(src: BinaryIO | Path | str) -> Iterator[BinaryIO]:
    if isinstance(src, (str, os.PathLike)):
        with Path(src).open("rb") as handle:
            yield handle
    else:
        yield src


def import_car(store: BlockStore, src: BinaryIO | Path | str) -> list[Cid]:
    """Verify and store every block of a CARv1; returns its roots, each checked complete.

    Blocks are stored as they pass verification, so a CAR refused part-way may leave
    some valid blocks behind (harmless: they are content-addressed and unpinned).
    """
    with _opened(src) as stream:
        roots, sections = read_car(stream)
        for cid, data in sections:
            if sha256(data).digest() != cid.digest:
                raise BlobCorrupted(f"block {cid} in the CAR does not hash to its CID")
            store.put_block(cid, data)
    for root in roots:
        missing = store.find_missing(root)
        if missing is not None:
            raise BlobNotFound(f"CAR root {root} is incomplete: block {missing} is missing")
    return roots
