"""The dag-pb and UnixFS protobuf wire formats, byte-exact with kubo and js-ipfs-unixfs.

A CID hashes the encoded node, so field order and presence matter: dag-pb writes every
Links entry (Hash, Name, Tsize) before Data, and a UnixFS file node writes Type, then
filesize, then one blocksizes entry per link. Decoding is strict about wire types and
lenient about optional fields, enough to walk DAGs made by kubo or by this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fl_chain.storage.cid import Cid
from fl_chain.storage.varint import VarintError, decode_uvarint, encode_uvarint

UNIXFS_RAW = 0
UNIXFS_FILE = 2
_VARINT = 0
_LENGTH_DELIMITED = 2


class DagPbError(ValueError):
    """Bytes that are not a dag-pb node or UnixFS data this package understands."""


@dataclass(frozen=True)
class PBLink:
    """One child: its CID, an (empty, for files) name and the child's cumulative size."""

    cid: Cid
    tsize: int
    name: str = ""


@dataclass(frozen=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True)
class UnixFSData:
    """The fields of a UnixFS `Data` message that matter for files."""

    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default_factory=tuple)


def _key(field_number: int, wire_type: int) -> bytes:
    return encode_uvarint(field_number << 3 | wire_type)


def _delimited(field_number: int, payload: bytes) -> bytes:
    return _key(field_number, _LENGTH_DELIMITED) + encode_uvarint(len(payload)) + payload


def encode_node(node: PBNode) -> bytes:
    """dag-pb canonical form: PBNode.Links (field 2) first, then Data (field 1)."""
    parts = []
    for link in node.links:
        body = (
            _delimited(1, link.cid.to_bytes())
            + _delimited(2, link.name.encode("utf-8"))
            + _key(3, _VARINT)
            + encode_uvarint(link.tsize)
        )
        parts.append(_delimited(2, body))
    if node.data is not None:
        parts.append(_delimited(1, node.data))
    return b"".join(parts)


def encode_file_data(filesize: int, blocksizes: list[int] | tuple[int, ...]) -> bytes:
    """UnixFS Data of an inner file node: Type=File, filesize, blocksizes (not packed)."""
    blocks_key = _key(4, _VARINT)
    return (
        _key(1, _VARINT)
        + encode_uvarint(UNIXFS_FILE)
        + _key(3, _VARINT)
        + encode_uvarint(filesize)
        + b"".join(blocks_key + encode_uvarint(size) for size in blocksizes)
    )


def _fields(data: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into (field number, wire type, value) in order."""
    view = memoryview(data)
    out: list[tuple[int, int, int | memoryview]] = []
    pos = 0
    try:
        while pos < len(view):
            key, pos = decode_uvarint(view, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise DagPbError("protobuf field number 0")
            if wire_type == _VARINT:
                value, pos = decode_uvarint(view, pos)
                out.append((number, wire_type, value))
            elif wire_type == _LENGTH_DELIMITED:
                length, pos = decode_uvarint(view, pos)
                if pos + length > len(view):
                    raise DagPbError("protobuf field runs past the end of the block")
                out.append((number, wire_type, view[pos : pos + length]))
                pos += length
            else:
                raise DagPbError(f"unsupported protobuf wire type {wire_type}")
    except VarintError as error:
        raise DagPbError(f"malformed protobuf: {error}") from None
    return out


def decode_node(block: bytes | memoryview) -> PBNode:
    """Parse a dag-pb block (spec order: Links, then at most one Data)."""
    links: list[PBLink] = []
    data: bytes | None = None
    for number, wire_type, value in _fields(block):
        if wire_type != _LENGTH_DELIMITED or number not in (1, 2):
            raise DagPbError(f"unexpected dag-pb field {number}")
        assert isinstance(value, memoryview)
        if number == 1:
            if data is not None:
                raise DagPbError("duplicate Data field in dag-pb node")
            data = bytes(value)
        else:
            if data is not None:
                raise DagPbError("dag-pb Links after Data")
            links.append(_decode_link(value))
    return PBNode(tuple(links), data)


def _decode_link(body: memoryview) -> PBLink:
    cid: Cid | None = None
    name = ""
    tsize = 0
    for number, _wire_type, value in _fields(body):
        if number == 1 and isinstance(value, memoryview):
            cid = Cid.from_bytes(value)
        elif number == 2 and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, int):
            tsize = value
        else:
            raise DagPbError(f"unexpected dag-pb link field {number}")
    if cid is None:
        raise DagPbError("dag-pb link without a Hash")
    return PBLink(cid, tsize, name)


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    """Parse UnixFS Data, keeping type, inline data, filesize and blocksizes."""
    kind: int | None = None
    inline = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, wire_type, value in _fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, memoryview):
            inline = bytes(value)
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and isinstance(value, memoryview):  # packed, as some writers do
            pos = 0
            try:
                while pos < len(value):
                    size, pos = decode_uvarint(value, pos)
                    blocksizes.append(size)
            except VarintError as error:
                raise DagPbError(f"malformed blocksizes: {error}") from None
        elif number in (1, 2, 3, 4):
            raise DagPbError(f"UnixFS field {number} has wire type {wire_type}")
        # Other fields (hashType, fanout, mode, mtime) do not change a file's bytes.
    if kind is None:
        raise DagPbError("UnixFS data without a Type")
    return UnixFSData(kind, inline, filesize, tuple(blocksizes))
