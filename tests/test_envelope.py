"""Sealed update envelopes: round trips, and each way an envelope is refused."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fl_chain.codec import schema_hash
from fl_chain.envelope import (
    ExpectedUpdate,
    UpdateHeader,
    open_envelope,
    read_header,
    seal,
)
from fl_chain.errors import (
    InvalidHeader,
    MalformedEnvelope,
    NonFiniteValues,
    NotARecipient,
    SchemaMismatch,
    TamperedEnvelope,
    UsageError,
    WrongChain,
    WrongFederation,
    WrongRound,
    WrongSender,
)
from fl_chain.identity import Identity

AGGREGATOR = Identity.derive(1, "aggregator")
VALIDATOR = Identity.derive(1, "validator")
OUTSIDER = Identity.derive(1, "outsider")
SENDER = Identity.derive(1, "hospital-0")
FEDERATION = Identity.derive(1, "federation").address
CHAIN_ID = 31337
RANDOMNESS = bytes(range(32))

MODEL = {
    "fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "fc.bias": np.array([0.5, -1.5, 2.0], dtype=np.float32),
    "steps": np.array(4, dtype=np.int64),
}
HEADER = UpdateHeader(
    federation=FEDERATION,
    chain_id=CHAIN_ID,
    round=3,
    sender=SENDER.address,
    schema_hash=schema_hash(MODEL),
    examples=120,
)
EXPECTED = ExpectedUpdate(FEDERATION, CHAIN_ID, 3, SENDER.address, schema_hash(MODEL))


def sealed(tensors: dict[str, np.ndarray] = MODEL, header: UpdateHeader = HEADER) -> bytes:
    return seal(tensors, header, [AGGREGATOR.x25519_public, VALIDATOR.x25519_public], RANDOMNESS)


def assert_same_model(opened: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> None:
    assert list(opened) == sorted(original)
    for name, tensor in original.items():
        assert opened[name].dtype == tensor.dtype
        assert opened[name].tobytes() == tensor.tobytes()


def test_round_trip_for_one_recipient() -> None:
    blob = seal(MODEL, HEADER, [AGGREGATOR.x25519_public])
    opened = open_envelope(blob, AGGREGATOR.x25519_private, EXPECTED)
    assert opened.header == HEADER
    assert_same_model(opened.tensors, MODEL)


def test_every_recipient_can_open() -> None:
    blob = sealed()
    for recipient in (AGGREGATOR, VALIDATOR):
        assert_same_model(open_envelope(blob, recipient.x25519_private, EXPECTED).tensors, MODEL)


def test_payload_is_encrypted() -> None:
    assert MODEL["fc.weight"].tobytes()[:16] not in sealed()


def test_a_key_that_is_not_a_recipient_cannot_open() -> None:
    with pytest.raises(NotARecipient, match=OUTSIDER.x25519_public.hex()):
        open_envelope(sealed(), OUTSIDER.x25519_private, EXPECTED)


def test_header_is_readable_without_keys() -> None:
    assert read_header(sealed()) == HEADER


def test_header_serialization_is_canonical() -> None:
    text = HEADER.to_bytes().decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert UpdateHeader.from_bytes(HEADER.to_bytes()) == HEADER


def test_sealing_with_randomness_is_deterministic() -> None:
    assert sealed() == sealed()
    reordered = seal(MODEL, HEADER, [VALIDATOR.x25519_public, AGGREGATOR.x25519_public], RANDOMNESS)
    assert reordered == sealed()


def test_deterministic_sealing_still_separates_messages() -> None:
    """A distinct message must get its own content key, nonce and ephemeral key."""
    first = sealed()
    other_round = sealed(header=replace(HEADER, round=4))
    other_values = sealed(tensors={**MODEL, "fc.bias": MODEL["fc.bias"] + 1})
    other_recipients = seal(MODEL, HEADER, [AGGREGATOR.x25519_public], RANDOMNESS)
    assert (
        len(
            {
                ephemeral_key_and_nonce(blob)
                for blob in (first, other_round, other_values, other_recipients)
            }
        )
        == 4
    )


def ephemeral_key_and_nonce(blob: bytes) -> bytes:
    header_length = int.from_bytes(blob[5:9], "big")
    recipients = int.from_bytes(blob[9 + header_length : 11 + header_length], "big")
    start = 11 + header_length + 80 * recipients
    return blob[start : start + 32 + 12]


def test_sealing_without_randomness_differs_each_time() -> None:
    first = seal(MODEL, HEADER, [AGGREGATOR.x25519_public])
    second = seal(MODEL, HEADER, [AGGREGATOR.x25519_public])
    assert first != second
    assert read_header(first) == read_header(second)


def test_short_randomness_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 32 bytes"):
        seal(MODEL, HEADER, [AGGREGATOR.x25519_public], b"seed")


def test_every_flipped_byte_is_detected() -> None:
    """Only a flip inside the opener's own listed key reads as "not a recipient"."""
    blob = sealed()
    own_key_start = blob.index(AGGREGATOR.x25519_public)
    own_key = range(own_key_start, own_key_start + 32)
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        expected_error = NotARecipient if position in own_key else TamperedEnvelope
        with pytest.raises(expected_error):
            open_envelope(bytes(damaged), AGGREGATOR.x25519_private, EXPECTED)


@pytest.mark.parametrize("mask", [0x20, 0x80, 0xFF])
def test_flipped_header_bytes_are_tampering(mask: int) -> None:
    blob = sealed()
    header_length = int.from_bytes(blob[5:9], "big")
    for position in range(9, 9 + header_length, 7):
        damaged = bytearray(blob)
        damaged[position] ^= mask
        with pytest.raises(TamperedEnvelope):
            open_envelope(bytes(damaged), VALIDATOR.x25519_private, EXPECTED)


def test_a_header_edited_to_the_expected_round_does_not_authenticate() -> None:
    blob = sealed(header=replace(HEADER, round=2))
    edited = blob.replace(b'"round":2', b'"round":3')
    assert read_header(edited).round == 3
    with pytest.raises(TamperedEnvelope, match="does not authenticate"):
        open_envelope(edited, AGGREGATOR.x25519_private, EXPECTED)


@pytest.mark.parametrize("length", [0, 3, 8, 100, -17, -1])
def test_truncated_envelope_is_malformed(length: int) -> None:
    with pytest.raises(MalformedEnvelope, match="truncated"):
        open_envelope(sealed()[:length], AGGREGATOR.x25519_private, EXPECTED)


def test_the_clear_header_is_read_from_the_first_bytes_alone() -> None:
    blob = sealed()
    assert read_header(blob[:4096]) == read_header(blob) == HEADER
    with pytest.raises(MalformedEnvelope, match="truncated"):
        read_header(blob[:20])


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedEnvelope, match="unexpected bytes"):
        open_envelope(sealed() + b"\x00", AGGREGATOR.x25519_private, EXPECTED)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + bytes(200), "not an fl-chain update envelope"),
        (b"FLCE\x03" + bytes(200), "version 3"),
    ],
)
def test_foreign_bytes_are_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedEnvelope, match=message):
        read_header(data)


def with_header(blob: bytes, header: bytes) -> bytes:
    """`blob` with its header bytes replaced (and its header length fixed)."""
    length = int.from_bytes(blob[5:9], "big")
    return blob[:5] + len(header).to_bytes(4, "big") + header + blob[9 + length :]


def test_non_canonical_header_is_malformed() -> None:
    blob = sealed()
    spaced = HEADER.to_bytes().replace(b'"round":3', b'"round": 3')
    with pytest.raises(MalformedEnvelope, match="canonical"):
        read_header(with_header(blob, spaced))


def test_header_with_missing_or_extra_fields_is_malformed() -> None:
    fields = json.loads(HEADER.to_bytes())
    for edited in ({k: v for k, v in fields.items() if k != "round"}, {**fields, "extra": 1}):
        text = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
        with pytest.raises(MalformedEnvelope, match="header fields"):
            read_header(with_header(sealed(), text))


def test_zero_examples_are_refused() -> None:
    with pytest.raises(InvalidHeader, match="examples"):
        replace(HEADER, examples=0)
    edited = sealed().replace(b'"examples":120', b'"examples":  0')
    with pytest.raises(MalformedEnvelope, match="examples"):
        open_envelope(edited, AGGREGATOR.x25519_private, EXPECTED)


@pytest.mark.parametrize(
    ("expected", "error", "evidence"),
    [
        (replace(EXPECTED, federation=SENDER.address), WrongFederation, SENDER.address),
        (replace(EXPECTED, chain_id=1), WrongChain, "chain 31337, expected 1"),
        (replace(EXPECTED, round=4), WrongRound, "round 3, expected 4"),
        (replace(EXPECTED, sender=VALIDATOR.address), WrongSender, VALIDATOR.address),
        (replace(EXPECTED, schema_hash="0" * 64), SchemaMismatch, "0" * 64),
    ],
)
def test_header_that_differs_from_the_chain_is_refused(
    expected: ExpectedUpdate, error: type[Exception], evidence: str
) -> None:
    with pytest.raises(error, match=evidence):
        open_envelope(sealed(), AGGREGATOR.x25519_private, expected)


def test_expected_addresses_may_be_lowercase() -> None:
    lowercase = ExpectedUpdate(
        FEDERATION.lower(), CHAIN_ID, 3, SENDER.address.lower(), schema_hash(MODEL)
    )
    assert open_envelope(sealed(), AGGREGATOR.x25519_private, lowercase).header == HEADER


def test_tensors_that_differ_from_the_declared_schema_are_refused() -> None:
    with pytest.raises(SchemaMismatch, match="declares schema"):
        seal({"fc.weight": MODEL["fc.weight"]}, HEADER, [AGGREGATOR.x25519_public])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_tensor(bad: float) -> None:
    weights = MODEL["fc.weight"].copy()
    weights[1, 2] = bad
    blob = sealed(tensors={**MODEL, "fc.weight": weights})
    with pytest.raises(NonFiniteValues, match=r"'fc\.weight'"):
        open_envelope(blob, AGGREGATOR.x25519_private, EXPECTED)


@pytest.mark.parametrize(
    "recipients",
    [[], [b"\x01" * 31], [AGGREGATOR.x25519_public, AGGREGATOR.x25519_public], [bytes(32)]],
)
def test_bad_recipient_lists_are_refused(recipients: list[bytes]) -> None:
    with pytest.raises(UsageError):
        seal(MODEL, HEADER, recipients)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", SENDER.address.lower()),
        ("round", -1),
        ("round", True),
        ("schema_hash", "abc"),
        ("encoding", "npz"),
    ],
)
def test_invalid_header_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidHeader, match=field if field != "encoding" else "npz"):
        replace(HEADER, **{field: value})
