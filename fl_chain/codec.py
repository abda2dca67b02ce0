"""Model tensors to bytes and back, as safetensors files.

safetensors holds raw numeric data and a JSON header, nothing executable, so a file from
a stranger can be parsed safely. Encoding writes the container here rather than through
`safetensors.numpy.save` because that one emits the metadata keys in a per-process
random order, and equal tensors must give equal bytes (hence equal content IDs).
Decoding goes through safetensors' own validating parser.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import safetensors

from fl_chain.errors import InvalidModelFile, UnsupportedTensor

Tensors = Mapping[str, np.ndarray]
SchemaEntry = tuple[str, str, tuple[int, ...]]

MAX_MODEL_BYTES = 1 << 30  # the largest model fl-chain builds, stores or reads without a base to size it by
_METADATA_KEY = "__metadata__"
_HEADER_ALIGNMENT = 8
_LENGTH_BYTES = 8

# safetensors dtype codes of the numeric dtypes this project exchanges.
_CODES: dict[np.dtype, str] = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint64): "U64",
}
_DTYPES: dict[str, np.dtype] = {code: dtype.newbyteorder("<") for dtype, code in _CODES.items()}


def tensor_schema(tensors: Tensors) -> list[SchemaEntry]:
    """(name, dtype, shape) of every tensor, sorted by name: what two models must share."""
    return [
        (name, _supported_dtype(name, tensor).name, tuple(int(n) for n in tensor.shape))
        for name, tensor in sorted(tensors.items())
    ]


def schema_hash(tensors: Tensors) -> str:
    """Hex SHA-256 of the schema as compact JSON, e.g. `[["w","float32",[2,3]]]`."""
    canonical = json.dumps(
        [[name, dtype, list(shape)] for name, dtype, shape in tensor_schema(tensors)],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def encode_model(tensors: Tensors, metadata: Mapping[str, str]) -> bytes:
    """A safetensors file of `tensors` and text `metadata`, byte-identical for equal input.

    Data is laid out by decreasing item size, then name, so every tensor starts aligned
    to its item size; header keys and metadata keys are written in sorted order.
    """
    for key, value in metadata.items():
        if not (_is_text(key) and _is_text(value)):
            raise UnsupportedTensor(f"metadata must map text to text, got {key!r}: {value!r}")
    arrays = {name: _little_endian(name, tensor) for name, tensor in tensors.items()}
    order = sorted(arrays, key=lambda name: (-arrays[name].itemsize, name))

    header: dict[str, object] = {}
    if metadata:
        header[_METADATA_KEY] = dict(sorted(metadata.items()))
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": _CODES[array.dtype.newbyteorder("=")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    header_bytes += b" " * (-len(header_bytes) % _HEADER_ALIGNMENT)

    return b"".join(
        [
            len(header_bytes).to_bytes(_LENGTH_BYTES, "little"),
            header_bytes,
            *(arrays[name].reshape(-1).view(np.uint8).data for name in order),
        ]
    )


def decode_model(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (read-only, sorted by name) and metadata of a safetensors file.

    Raises `InvalidModelFile` for anything else, including a safetensors file with a
    non-numeric dtype; nothing in `data` is ever executed.
    """
    try:
        entries = safetensors.deserialize(data)
    except safetensors.SafetensorError as exc:
        raise InvalidModelFile(f"not a safetensors model file ({len(data)} bytes): {exc}") from exc
    tensors: dict[str, np.ndarray] = {}
    for name, entry in entries:
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise InvalidModelFile(
                f"tensor {name!r} has dtype {entry['dtype']}; "
                f"only {', '.join(sorted(_DTYPES))} are accepted"
            )
        try:
            tensors[name] = np.frombuffer(entry["data"], dtype=dtype).reshape(entry["shape"])
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. a shape of [0, 2**62]: no array has it
            raise InvalidModelFile(f"tensor {name!r} declares shape {entry['shape']}, which no array can have: {exc}") from None
    return dict(sorted(tensors.items())), _metadata(data)


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` map of a file safetensors has already validated."""
    length = int.from_bytes(data[:_LENGTH_BYTES], "little")
    header = json.loads(data[_LENGTH_BYTES : _LENGTH_BYTES + length])
    return dict(header.get(_METADATA_KEY) or {})


def _supported_dtype(name: str, tensor: np.ndarray) -> np.dtype:
    if not _is_text(name) or name == _METADATA_KEY:
        raise UnsupportedTensor(f"{name!r} cannot name a tensor")
    dtype = np.asarray(tensor).dtype
    native = dtype.newbyteorder("=")
    if native not in _CODES:
        raise UnsupportedTensor(
            f"tensor {name!r} has dtype {dtype}; only "
            f"{', '.join(sorted(d.name for d in _CODES))} can be exchanged"
        )
    return native


def _is_text(value: object) -> bool:
    """A str that UTF-8 can encode (no lone surrogates), as the safetensors header needs."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _little_endian(name: str, tensor: np.ndarray) -> np.ndarray:
    """`tensor` as a C-contiguous little-endian array, copied only if it must be."""
    dtype = _supported_dtype(name, tensor).newbyteorder("<")
    return np.asarray(tensor, dtype=dtype, order="C")
