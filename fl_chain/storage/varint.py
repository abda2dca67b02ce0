"""Unsigned LEB128 varints, the length and code prefix used by CIDs, protobuf and CAR."""

from __future__ import annotations

from typing import BinaryIO

# A uint64 never needs more than 10 bytes; refusing longer input stops garbage early.
MAX_VARINT_BYTES = 10


class VarintError(ValueError):
    """Bytes that are not a minimal unsigned varint of at most 64 bits."""


def encode_uvarint(value: int) -> bytes:
    """The minimal varint of a non-negative integer below 2**64."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Read a varint at `offset`; returns (value, offset just past it)."""
    value = 0
    shift = 0
    end = len(data)
    for index in range(offset, min(end, offset + MAX_VARINT_BYTES)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and index > offset:
                raise VarintError("varint is not minimally encoded")
            if value >= 1 << 64:
                raise VarintError("varint exceeds 64 bits")
            return value, index + 1
        shift += 7
    if end - offset >= MAX_VARINT_BYTES:
        raise VarintError("varint is longer than 10 bytes")
    raise VarintError("varint is truncated")


def read_uvarint(stream: BinaryIO) -> int | None:
    """Read one varint from a stream; None at a clean end of stream (before its first byte)."""
    raw = bytearray()
    while True:
        byte = stream.read(1)
        if not byte:
            if raw:
                raise VarintError("varint is truncated")
            return None
        raw += byte
        if byte[0] < 0x80:
            return decode_uvarint(raw)[0]
        if len(raw) >= MAX_VARINT_BYTES:
            raise VarintError("varint is longer than 10 bytes")
