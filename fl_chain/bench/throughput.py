"""Throughput: how fast an update passes through the envelope and the aggregator, in MB/s.

Every figure sits next to a plain memory copy of the same size measured in the same
process, so a result says how far a step is from what the machine can move at all, not
only how this machine compares with another. MB is 10**6 bytes, and every rate counts
bytes of update data (tensor bytes), so the envelope stages compare with each other.
`seal` encodes the tensors itself, so the encryption figure includes one encode: that is
the step a participant runs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_utils import to_checksum_address

from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.codec import encode_model, schema_hash
from fl_chain.envelope import UpdateHeader, seal
from fl_chain.identity import Identity
from fl_chain.protocol import sealing_randomness
from fl_chain.storage.unixfs import cid_of

MB = 10**6
DEFAULT_SIZES_MB = (1, 10, 100)
DEFAULT_REPEATS = 3
DEFAULT_UPDATES = 10
ENVELOPE_TARGET_MB_S = 300.0
AGGREGATION_TARGET_MB_S = 1000.0
TENSORS_PER_UPDATE = 4
# A 1 MB copy takes tens of microseconds: small sizes run an operation repeatedly until a
# sample lasts this long, so timer resolution and one-off stalls do not decide the figure.
MIN_SAMPLE_SECONDS = 0.05

OPERATIONS = {
    "memcpy": "memory copy (baseline)",
    "encode": "encode (safetensors)",
    "seal": "seal: encode + encrypt for 2",
    "cid": "CID of the sealed blob",
    "envelope": "envelope: seal + CID",
    "aggregate": "aggregate: FedAvg of {updates}",
}
TARGETS = {"envelope": ENVELOPE_TARGET_MB_S, "aggregate": AGGREGATION_TARGET_MB_S}


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def target_verdict(mb_s: float, target_mb_s: float) -> str:
    """'met', or by how much of the target the figure falls short (a miss is at least 1%)."""
    if mb_s >= target_mb_s:
        return "met"
    return f"missed by {max(1, round(100 * (1 - mb_s / target_mb_s)))}%"


@dataclass(frozen=True)
class SizeFigures:
    """MB/s of every operation for updates of one size."""

    size_mb: float
    mb_s: Mapping[str, float]

    def ratio_to_memcpy(self, operation: str) -> float:
        return self.mb_s[operation] / self.mb_s["memcpy"]

    def as_json(self) -> dict[str, Any]:
        return {
            "size_mb": self.size_mb,
            "mb_s": {operation: round(rate, 1) for operation, rate in self.mb_s.items()},
            "ratio_to_memcpy": {operation: round(self.ratio_to_memcpy(operation), 4) for operation in self.mb_s},
            "targets": {operation: target_verdict(self.mb_s[operation], target)
                        for operation, target in TARGETS.items()},
        }


@dataclass(frozen=True)
class ThroughputFigures:
    sizes: tuple[SizeFigures, ...]
    repeats: int
    updates: int

    @property
    def largest(self) -> SizeFigures:
        return max(self.sizes, key=lambda figures: figures.size_mb)

    def table(self) -> str:
        rows = [("update", "operation", "MB/s", "vs memcpy", "target")]
        for figures in self.sizes:
            for operation, label in OPERATIONS.items():
                mb_s, target = figures.mb_s[operation], TARGETS.get(operation)
                verdict = "" if target is None else f">= {target:,.0f} MB/s: {target_verdict(mb_s, target)}"
                rows.append((f"{figures.size_mb:g} MB", label.format(updates=self.updates), f"{mb_s:,.0f}",
                             f"{figures.ratio_to_memcpy(operation):.2f}x", verdict))
        note = f"median of {self.repeats} samples; MB = 10**6 bytes of update data"
        return f"{render_table(rows)}\n{note}"

    def as_json(self) -> dict[str, Any]:
        largest = self.largest
        return {
            "size_mb": largest.size_mb,
            "envelope_mb_s": round(largest.mb_s["envelope"], 1),
            "aggregate_mb_s": round(largest.mb_s["aggregate"], 1),
            "memcpy_mb_s": round(largest.mb_s["memcpy"], 1),
            "envelope_target_mb_s": ENVELOPE_TARGET_MB_S,
            "aggregate_target_mb_s": AGGREGATION_TARGET_MB_S,
            "envelope_target": target_verdict(largest.mb_s["envelope"], ENVELOPE_TARGET_MB_S),
            "aggregate_target": target_verdict(largest.mb_s["aggregate"], AGGREGATION_TARGET_MB_S),
            "repeats": self.repeats,
            "updates": self.updates,
            "sizes": [figures.as_json() for figures in self.sizes],
        }


def measure_throughput(
    sizes_mb: Sequence[float] = DEFAULT_SIZES_MB, repeats: int = DEFAULT_REPEATS, updates: int = DEFAULT_UPDATES
) -> ThroughputFigures:
    """Measures each size in turn; at most `updates` + a few copies of one size are alive at once."""
    return ThroughputFigures(
        tuple(_measure_size(size_mb, repeats, updates) for size_mb in sizes_mb), repeats, updates
    )


def _measure_size(size_mb: float, repeats: int, updates: int) -> SizeFigures:
    nbytes = int(size_mb * MB)
    tensors = update_tensors(nbytes)
    rates = {"memcpy": _memcpy_rate(nbytes, repeats)}
    rates |= _envelope_rates(tensors, nbytes, repeats)
    rates["aggregate"] = _aggregation_rate(tensors, nbytes, repeats, updates)
    return SizeFigures(size_mb, rates)


def update_tensors(nbytes: int) -> dict[str, np.ndarray]:
    """A float32 update of `nbytes` (rounded down to whole values) in a few layers."""
    values = np.random.default_rng(0).standard_normal(nbytes // 4, dtype=np.float32)
    return {f"layer{i}.weight": part for i, part in enumerate(np.array_split(values, TENSORS_PER_UPDATE))}


def _rate(operation: Callable[[], object], nbytes: int, repeats: int) -> float:
    """MB/s from the median of `repeats` samples, after one warm-up call."""
    start = time.perf_counter()
    operation()
    calls = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(time.perf_counter() - start, 1e-9)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            operation()
        samples.append((time.perf_counter() - start) / calls)
    return nbytes / MB / statistics.median(samples)


def _memcpy_rate(nbytes: int, repeats: int) -> float:
    source = np.ones(nbytes, dtype=np.uint8)
    destination = np.zeros_like(source)
    return _rate(lambda: np.copyto(destination, source), nbytes, repeats)


def _envelope_rates(tensors: Mapping[str, np.ndarray], nbytes: int, repeats: int) -> dict[str, float]:
    """Each envelope step alone, then seal + CID as a participant runs them."""
    participant = Identity.derive("throughput-bench", "participant")
    recipients = [Identity.derive("throughput-bench", name).x25519_public for name in ("aggregator", "validator")]
    header = UpdateHeader(
        federation=to_checksum_address(b"\x01" * 20),
        chain_id=1337,
        round=1,
        sender=participant.address,
        schema_hash=schema_hash(tensors),
        examples=100,
    )
    randomness = sealing_randomness(participant)
    sealed = seal(tensors, header, recipients, randomness)
    return {
        "encode": _rate(lambda: encode_model(tensors, {}), nbytes, repeats),
        "seal": _rate(lambda: seal(tensors, header, recipients, randomness), nbytes, repeats),
        "cid": _rate(lambda: cid_of(sealed), nbytes, repeats),
        "envelope": _rate(lambda: cid_of(seal(tensors, header, recipients, randomness)), nbytes, repeats),
    }


def _aggregation_rate(tensors: Mapping[str, np.ndarray], nbytes: int, repeats: int, updates: int) -> float:
    """MB/s of update data merged. Each update has its own memory, as opened updates do:
    one array shared by all would stay in cache and flatter the figure."""
    weighted = [
        WeightedUpdate(
            to_checksum_address(index.to_bytes(20, "big")),
            10 + index,
            {name: tensor + np.float32(index / 1000) for name, tensor in tensors.items()},
        )
        for index in range(1, updates + 1)
    ]
    return _rate(lambda: federated_average(weighted), updates * nbytes, repeats)
