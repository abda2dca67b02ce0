"""Weighted FedAvg: exact, order-independent, and strict about its inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_chain import aggregation
from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.errors import AggregationError, DuplicateSender, InconsistentUpdates, NoUpdates
from fl_chain.identity import Identity

# Checksummed addresses whose case order differs from their value order.
LOW = "0x00000000000000000000000000000000000000a0"
HIGH = "0x00000000000000000000000000000000000000A1"
ADDRESSES = [Identity.derive(3, f"hospital-{index}").address for index in range(6)]


def test_known_example_by_hand() -> None:
    updates = [
        WeightedUpdate(
            ADDRESSES[0], 1, {"w": np.array([1.0, 2.0], dtype=np.float32), "n": np.array([1, 10])}
        ),
        WeightedUpdate(
            ADDRESSES[1], 3, {"w": np.array([5.0, -2.0], dtype=np.float32), "n": np.array([3, 3])}
        ),
    ]
    result = federated_average(updates)
    # w: (1*1 + 3*5)/4 = 4, (1*2 + 3*-2)/4 = -1
    # n: (1 + 9)/4 = 2.5 -> 2 (ties to even), (10 + 9)/4 = 4.75 -> 5
    assert result["w"].dtype == np.float32
    assert result["w"].tolist() == [4.0, -1.0]
    assert result["n"].dtype == np.int64
    assert result["n"].tolist() == [2, 5]


def test_weights_are_proportional_to_examples() -> None:
    zeros, ones = {"w": np.zeros(4)}, {"w": np.ones(4)}
    for examples in (1, 2, 7, 1000):
        result = federated_average(
            [WeightedUpdate(ADDRESSES[0], examples, ones), WeightedUpdate(ADDRESSES[1], 10, zeros)]
        )
        np.testing.assert_allclose(result["w"], examples / (examples + 10), rtol=1e-15)


def test_float32_is_accumulated_in_float64() -> None:
    rng = np.random.default_rng(5)
    tensors = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    examples = [1, 1, 1]
    updates = [
        WeightedUpdate(address, n, {"w": t})
        for address, n, t in zip(ADDRESSES[:3], examples, tensors, strict=True)
    ]
    reference = np.zeros(1000)
    order = sorted(range(3), key=lambda index: bytes.fromhex(ADDRESSES[index][2:]))
    for index in order:
        reference += tensors[index].astype(np.float64) * (1 / 3)
    assert federated_average(updates)["w"].tobytes() == reference.astype(np.float32).tobytes()


def test_participants_are_ordered_by_address_value_not_by_string() -> None:
    """Floating-point sums depend on order, so the order is part of the result."""
    first = "0x0000000000000000000000000000000000000001"
    assert sorted([LOW, HIGH]) == [HIGH, LOW]  # string order puts "A1" before "a0"
    big, tiny, minus_big = (np.float64(value) * (1 / 3) for value in (1e16, 1.0, -1e16))
    by_value = (big + tiny) + minus_big  # 0x01, 0xa0, 0xa1
    by_string = (big + minus_big) + tiny  # 0x01, "A1", "a0"
    assert by_value != by_string
    updates = [
        WeightedUpdate(HIGH, 1, {"w": np.array([-1e16])}),
        WeightedUpdate(LOW, 1, {"w": np.array([1.0])}),
        WeightedUpdate(first, 1, {"w": np.array([1e16])}),
    ]
    assert federated_average(updates)["w"][0] == by_value


def test_tensors_are_chunked_without_changing_a_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    updates = [
        WeightedUpdate(address, 3 + index, {"w": rng.standard_normal((7, 13))})
        for index, address in enumerate(ADDRESSES)
    ]
    whole = federated_average(updates)["w"]
    monkeypatch.setattr(aggregation, "CHUNK_ELEMENTS", 10)
    assert federated_average(updates)["w"].tobytes() == whole.tobytes()


update_sets = st.lists(
    st.tuples(st.integers(1, 10_000), st.floats(-1e6, 1e6), st.floats(-1e3, 1e3)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(update_sets, st.randoms(use_true_random=False))
def test_any_order_gives_identical_bytes(specs: list[tuple[int, float, float]], shuffler) -> None:
    updates = [
        WeightedUpdate(
            address,
            examples,
            {
                "w": (np.linspace(low, high, 12) * np.float32(1.1))
                .astype(np.float32)
                .reshape(3, 4),
                "b": np.array([low, high]),
                "count": np.array([examples, 2 * examples], dtype=np.int32),
            },
        )
        for address, (examples, low, high) in zip(ADDRESSES, specs, strict=False)
    ]
    expected = federated_average(updates)
    shuffled = list(updates)
    shuffler.shuffle(shuffled)
    result = federated_average(shuffled)
    assert list(result) == list(expected) == ["b", "count", "w"]
    for name in expected:
        assert result[name].dtype == expected[name].dtype == updates[0].tensors[name].dtype
        assert result[name].tobytes() == expected[name].tobytes()


def test_schema_mismatch_names_the_sender_and_the_tensor() -> None:
    """The update first in address order is the reference the others are compared to."""
    good = WeightedUpdate(LOW, 1, {"w": np.zeros((2, 2), np.float32)})
    for tensors, evidence in [
        ({"w": np.zeros((2, 3), np.float32)}, r"'w' is float32\[2, 3\], expected float32\[2, 2\]"),
        ({"w": np.zeros((2, 2), np.float64)}, "'w' is float64"),
        ({"v": np.zeros((2, 2), np.float32)}, r"\['w'\] are missing"),
        ({"w": np.zeros((2, 2), np.float32), "b": np.zeros(1)}, r"\['b'\] are unexpected"),
    ]:
        with pytest.raises(InconsistentUpdates, match=evidence) as raised:
            federated_average([WeightedUpdate(HIGH, 1, tensors), good])
        assert f"update from {HIGH} does not match the update from {LOW}" in str(raised.value)


def test_empty_input_is_refused() -> None:
    with pytest.raises(NoUpdates):
        federated_average([])


def test_duplicate_sender_is_refused_whatever_the_case() -> None:
    tensors = {"w": np.zeros(2)}
    with pytest.raises(DuplicateSender, match=ADDRESSES[0].lower()):
        federated_average(
            [
                WeightedUpdate(ADDRESSES[0], 1, tensors),
                WeightedUpdate(ADDRESSES[0].lower(), 2, tensors),
            ]
        )


@pytest.mark.parametrize("examples", [0, -1])
def test_updates_need_examples(examples: int) -> None:
    with pytest.raises(AggregationError, match="examples"):
        WeightedUpdate(ADDRESSES[0], examples, {"w": np.zeros(2)})


def test_sender_must_be_an_address() -> None:
    with pytest.raises(AggregationError, match="not an Ethereum address"):
        federated_average([WeightedUpdate("hospital-0", 1, {"w": np.zeros(2)})])
