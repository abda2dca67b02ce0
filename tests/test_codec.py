"""Model files: exact round trips, deterministic bytes, and refusal of anything else."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load, save

from fl_chain.codec import decode_model, encode_model, schema_hash, tensor_schema
from fl_chain.errors import EnvelopeError, InvalidModelFile, UnsupportedTensor

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint16]

tensor = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
)
names = st.text(min_size=1, max_size=12).filter(lambda name: name != "__metadata__")
tensors = st.dictionaries(names, tensor, max_size=5)
metadata = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5)


@settings(max_examples=150, deadline=None)
@given(tensors, metadata)
def test_round_trip_is_exact_and_re_encoding_gives_the_same_bytes(
    model: dict[str, np.ndarray], meta: dict[str, str]
) -> None:
    data = encode_model(model, meta)
    decoded, decoded_meta = decode_model(data)
    assert decoded_meta == meta
    assert list(decoded) == sorted(model)
    for name, original in model.items():
        assert decoded[name].dtype == original.dtype
        assert decoded[name].shape == original.shape
        assert decoded[name].tobytes() == original.tobytes()  # NaN payloads included
    assert encode_model(decoded, decoded_meta) == data
    assert (
        encode_model(dict(reversed(list(model.items()))), dict(reversed(list(meta.items()))))
        == data
    )


def test_bytes_do_not_depend_on_the_process() -> None:
    """safetensors.numpy.save orders metadata keys per process; encode_model must not."""
    script = (
        "import hashlib, numpy as np; from fl_chain.codec import encode_model;"
        "m = {k: k for k in 'abcdefghijklmnop'};"
        "print(hashlib.sha256(encode_model({'w': np.arange(4.0)}, m)).hexdigest())"
    )
    digests = {subprocess.check_output([sys.executable, "-c", script], text=True) for _ in range(2)}
    assert len(digests) == 1


def test_output_is_what_safetensors_itself_writes_and_reads() -> None:
    model = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, dtype=np.float32)}
    assert encode_model(model, {"round": "3"}) == save(model, {"round": "3"})
    mixed = {"a": np.arange(3, dtype=np.int8), "b": np.eye(2), "c": np.float16(2) * np.ones(())}
    loaded = load(encode_model(mixed, {"x": "1", "y": "2"}))
    assert all(np.array_equal(loaded[name], mixed[name]) for name in mixed)


def test_non_contiguous_and_big_endian_tensors_are_encoded_by_value() -> None:
    base = np.arange(12, dtype=">f4").reshape(3, 4)
    decoded, _ = decode_model(encode_model({"t": base.T}, {}))
    assert np.array_equal(decoded["t"], base.T)
    assert decoded["t"].dtype == np.float32


def test_schema_is_sorted_by_name() -> None:
    model = {"b": np.zeros((2, 3), np.float32), "a": np.zeros(4, np.int64)}
    assert tensor_schema(model) == [("a", "int64", (4,)), ("b", "float32", (2, 3))]


@pytest.mark.parametrize(
    "changed",
    [
        {"w": np.zeros((2, 4), np.float32)},  # shape
        {"w": np.zeros((3, 2), np.float32)},  # same size, other shape
        {"w": np.zeros((2, 3), np.float64)},  # dtype
        {"v": np.zeros((2, 3), np.float32)},  # name
        {"w": np.zeros((2, 3), np.float32), "b": np.zeros(1, np.float32)},  # extra tensor
    ],
)
def test_schema_hash_changes_with_name_dtype_and_shape(changed: dict[str, np.ndarray]) -> None:
    assert schema_hash(changed) != schema_hash({"w": np.zeros((2, 3), np.float32)})


def test_schema_hash_ignores_values() -> None:
    assert schema_hash({"w": np.ones((2, 3), np.float32)}) == schema_hash(
        {"w": np.zeros((2, 3), np.float32)}
    )


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps({"w": np.zeros(3)}), b"\xff" * 64])
def test_non_safetensors_input_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidModelFile, match="not a safetensors model file"):
        decode_model(data)
    assert issubclass(InvalidModelFile, EnvelopeError)


def test_truncated_file_is_refused() -> None:
    data = encode_model({"w": np.arange(10.0)}, {})
    with pytest.raises(InvalidModelFile):
        decode_model(data[:-1])


def test_safetensors_file_with_a_non_numeric_dtype_is_refused() -> None:
    with pytest.raises(InvalidModelFile, match="BOOL"):
        decode_model(save({"mask": np.ones(3, dtype=bool)}))


@pytest.mark.parametrize(
    "model",
    [
        {"mask": np.ones(3, dtype=bool)},
        {"z": np.ones(3, dtype=np.complex64)},
        {"o": np.array([object()])},
        {"__metadata__": np.ones(3)},
    ],
)
def test_unsupported_tensors_are_refused_when_encoding(model: dict[str, np.ndarray]) -> None:
    with pytest.raises(UnsupportedTensor):
        encode_model(model, {})


def test_metadata_must_be_text() -> None:
    with pytest.raises(UnsupportedTensor, match="metadata"):
        encode_model({"w": np.ones(1)}, {"round": 3})  # type: ignore[dict-item]
