"""Deterministic weighted federated averaging (FedAvg).

Validators re-compute the aggregate and attest its content ID, so equal inputs must give
equal bytes whatever order the updates arrive in: participants are summed in address
order, in float64, with weights examples / total. Element-wise IEEE operations in a fixed
order round identically everywhere, so chunking the work changes no bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from eth_utils import to_canonical_address

from fl_chain.codec import SchemaEntry, tensor_schema
from fl_chain.errors import AggregationError, DuplicateSender, InconsistentUpdates, NoUpdates

# Elements summed per pass: the float64 accumulator and scratch (2 x 512 KiB) stay in
# cache while every update's slice streams through them.
CHUNK_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class WeightedUpdate:
    """One participant's tensors and the number of examples they were trained on."""

    sender: str
    examples: int
    tensors: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        if type(self.examples) is not int or self.examples < 1:
            raise AggregationError(
                f"update from {self.sender} has {self.examples!r} examples; it needs at least 1"
            )


def federated_average(updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
    """Sum of examples_i / total * tensors_i, per tensor, in each tensor's input dtype.

    Integer tensors are rounded to nearest (ties to even) before the cast back.
    """
    if not updates:
        raise NoUpdates("no updates to average")
    ordered = in_address_order(updates)
    reference = ordered[0]
    schema = tensor_schema(reference.tensors)
    for update in ordered[1:]:
        difference = _schema_difference(schema, tensor_schema(update.tensors))
        if difference:
            raise InconsistentUpdates(
                f"update from {update.sender} does not match the update from "
                f"{reference.sender}: {difference}"
            )
    total = sum(update.examples for update in ordered)
    weights = [update.examples / total for update in ordered]
    return {
        name: _weighted_sum([np.asarray(update.tensors[name]) for update in ordered], weights)
        for name, _, _ in schema
    }


def in_address_order(updates: Sequence[WeightedUpdate]) -> list[WeightedUpdate]:
    """Updates sorted by the 20-byte address value; one update per address."""
    keyed: dict[bytes, WeightedUpdate] = {}
    for update in updates:
        try:
            address = to_canonical_address(update.sender)
        except (TypeError, ValueError) as exc:
            raise AggregationError(
                f"update sender {update.sender!r} is not an Ethereum address"
            ) from exc
        if address in keyed:
            raise DuplicateSender(f"two updates come from {update.sender}")
        keyed[address] = update
    return [keyed[address] for address in sorted(keyed)]


def _weighted_sum(tensors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ weight_i * tensor_i accumulated in float64, chunk by chunk, cast to the input dtype."""
    shape, dtype = tensors[0].shape, tensors[0].dtype
    flat = [tensor.reshape(-1) for tensor in tensors]
    result = np.empty(flat[0].size, dtype=dtype)
    accumulator = np.empty(min(CHUNK_ELEMENTS, result.size), dtype=np.float64)
    scratch = np.empty_like(accumulator)
    for start in range(0, result.size, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, result.size)
        total, term = accumulator[: stop - start], scratch[: stop - start]
        # dtype=float64 forces the float64 loop: a float32 input would otherwise be
        # multiplied in float32 and only then widened.
        np.multiply(flat[0][start:stop], weights[0], out=total, dtype=np.float64)
        for values, weight in zip(flat[1:], weights[1:], strict=True):
            np.multiply(values[start:stop], weight, out=term, dtype=np.float64)
            np.add(total, term, out=total)
        if dtype.kind in "iu":
            np.rint(total, out=total)
        result[start:stop] = total
    return result.reshape(shape)


def _schema_difference(reference: Sequence[SchemaEntry], other: Sequence[SchemaEntry]) -> str:
    """The first way `other` differs from `reference`, in words; empty if they are equal."""
    expected = {name: (dtype, shape) for name, dtype, shape in reference}
    found = {name: (dtype, shape) for name, dtype, shape in other}
    if missing := sorted(expected.keys() - found.keys()):
        return f"tensors {missing} are missing"
    if extra := sorted(found.keys() - expected.keys()):
        return f"tensors {extra} are unexpected"
    for name, (dtype, shape) in sorted(expected.items()):
        if found[name] != (dtype, shape):
            other_dtype, other_shape = found[name]
            found_text = f"{other_dtype}{list(other_shape)}"
            return f"tensor {name!r} is {found_text}, expected {dtype}{list(shape)}"
    return ""


def flattened(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Every tensor's values in one float64 vector, tensors in name order (for distances)."""
    return np.concatenate([np.asarray(tensors[name], np.float64).reshape(-1) for name in sorted(tensors)])
