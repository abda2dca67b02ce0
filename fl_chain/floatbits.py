"""Real numbers as the contract stores them: the 64 bits of an IEEE-754 binary64."""

from __future__ import annotations

import struct


def float_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(value)))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", int(bits)))[0]
