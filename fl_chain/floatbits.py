"""Real numbers as the contract stores them: the 64 bits of an IEEE-754 binary64."""

from __future__ import annotations

import math
import struct


def float_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(value)))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", int(bits)))[0]


def finite(value: object) -> float | None:
    """`value` as a finite float, or None if it is not a number (a bool is not), is
    infinite or NaN, or is an integer too large for a float (10**400 from a config)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
