"""Content identifiers: CIDv1 over sha2-256, spelled the way kubo prints them.

Only what the project produces is accepted (version 1, raw or dag-pb, sha2-256), so a
CID read from anywhere (a config, a receipt, the chain) either means exactly one blob
this code can fetch and verify, or is refused with `InvalidCid`. The same two fields,
`digest` (bytes32) and `codec` (uint32), are what the contract stores.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from fl_chain.errors import InvalidCid
from fl_chain.storage.varint import VarintError, decode_uvarint, encode_uvarint

RAW = 0x55
"""Multicodec of a raw block: the bytes are the content (file leaves, small files)."""
DAG_PB = 0x70
"""Multicodec of a dag-pb block: a UnixFS node linking to other blocks."""
SHA2_256 = 0x12
"""Multihash code of sha2-256, the only hash this project uses."""
DIGEST_SIZE = 32
CID_VERSION = 1
CODECS = {RAW: "raw", DAG_PB: "dag-pb"}

MULTIBASE_BASE32 = "b"
_BASE32_BODY = re.compile(r"[a-z2-7]+")
_SHOWN_INPUT = 80


def _shown(text: object) -> str:
    """The offending input for an error message, shortened when it is very long."""
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_INPUT else shown[:_SHOWN_INPUT] + "..."


@dataclass(frozen=True, order=True, repr=False)
class Cid:
    """A CIDv1 with a sha2-256 multihash: which codec reads the block, and its digest."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise InvalidCid(f"unsupported CID codec 0x{self.codec:x} (expected raw or dag-pb)")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise InvalidCid("a sha2-256 CID digest must be exactly 32 bytes")

    @classmethod
    def of_block(cls, codec: int, block: bytes | bytearray | memoryview) -> Cid:
        """The CID of one block's bytes under `codec`."""
        return cls(codec, hashlib.sha256(block).digest())

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Read the multibase base32 form ('b' + lower-case RFC 4648, no padding)."""
        if not isinstance(text, str):
            raise InvalidCid(f"not a CID string: {_shown(text)}")
        if text.startswith("Qm"):
            raise InvalidCid(f"CIDv0 is not supported, use the CIDv1 form: {_shown(text)}")
        body = text[1:]
        if not text.startswith(MULTIBASE_BASE32) or not _BASE32_BODY.fullmatch(body):
            raise InvalidCid(f"not a base32 CIDv1 (expected 'b' + [a-z2-7]): {_shown(text)}")
        padded = body.upper() + "=" * (-len(body) % 8)
        try:
            raw = base64.b32decode(padded)
        except binascii.Error:
            raise InvalidCid(f"not valid base32: {_shown(text)}") from None
        try:
            cid = cls.from_bytes(raw)
        except InvalidCid as error:
            raise InvalidCid(f"{error}: {_shown(text)}") from None
        if str(cid) != text:
            # Non-zero padding bits or a non-canonical length: same bytes, other spelling.
            raise InvalidCid(f"not the canonical spelling of a CID: {_shown(text)}")
        return cid

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Cid:
        """Read the binary form; the whole input must be exactly one CID."""
        cid, end = cls.read(data)
        if end != len(data):
            raise InvalidCid("trailing bytes after the CID")
        return cid

    @classmethod
    def read(cls, data: bytes | memoryview, offset: int = 0) -> tuple[Cid, int]:
        """Read a binary CID starting at `offset`; returns (cid, offset just past it)."""
        try:
            version, pos = decode_uvarint(data, offset)
            if version != CID_VERSION:
                raise InvalidCid(f"only CIDv1 is supported, got version {version}")
            codec, pos = decode_uvarint(data, pos)
            hash_code, pos = decode_uvarint(data, pos)
            length, pos = decode_uvarint(data, pos)
        except VarintError as error:
            raise InvalidCid(f"malformed CID: {error}") from None
        if hash_code != SHA2_256:
            raise InvalidCid(f"only sha2-256 multihashes are supported, got 0x{hash_code:x}")
        if length != DIGEST_SIZE:
            raise InvalidCid(f"sha2-256 digest length must be 32, got {length}")
        if pos + length > len(data):
            raise InvalidCid("CID digest is truncated")
        return cls(codec, bytes(data[pos : pos + length])), pos + length

    def to_bytes(self) -> bytes:
        """The binary form: version, codec, multihash (code, length, digest)."""
        return (
            encode_uvarint(CID_VERSION)
            + encode_uvarint(self.codec)
            + encode_uvarint(SHA2_256)
            + encode_uvarint(DIGEST_SIZE)
            + self.digest
        )

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __str__(self) -> str:
        encoded = base64.b32encode(self.to_bytes()).decode("ascii")
        return MULTIBASE_BASE32 + encoded.rstrip("=").lower()

    def __repr__(self) -> str:
        return f"Cid({str(self)!r})"

    @property
    def codec_name(self) -> str:
        return CODECS[self.codec]
