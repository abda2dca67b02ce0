"""Whatever bytes a stranger sends, each parser answers with its own error type, never another.

Properties over arbitrary and mutated inputs: a model file, an envelope, a receipt, an
evaluation and a run config either parse or raise the one error class their callers turn
into an exclusion, a finding or a one-line refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_chain.codec import decode_model, encode_model, schema_hash
from fl_chain.envelope import ExpectedUpdate, UpdateHeader, open_envelope, seal
from fl_chain.errors import EnvelopeError, InvalidModelFile, UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import parse_json
from fl_chain.messages import AttestationReport, Evaluation, MalformedMessage, Receipt, Ticket
from fl_chain.rundir import read_run_config
from fl_chain.storage.cid import Cid

MODEL = {"b": np.arange(3, dtype=np.float32), "w": np.ones((2, 3), np.float32)}
VALID = encode_model(MODEL, {"k": "v"})
OPENER = Identity.derive("untrusted bytes", "opener")
SENDER = Identity.derive("untrusted bytes", "sender")
FEDERATION = "0x" + "12" * 20
HEADER = UpdateHeader("0x1212121212121212121212121212121212121212", 5, 1, SENDER.address, schema_hash(MODEL), 3)
ENVELOPE = seal(MODEL, HEADER, [OPENER.x25519_public])
EXPECTED = ExpectedUpdate(HEADER.federation, 5, 1, SENDER.address, schema_hash(MODEL))
TICKET = Ticket(1, 1, Cid.parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), 10)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with a few bytes changed, cut short, or extended."""
    positions = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    flipped = positions.map(lambda changes: bytes(_apply(data, changes)))
    return st.one_of(flipped, st.integers(0, len(data)).map(lambda n: data[:n]),
                     st.binary(max_size=64).map(lambda tail: data + tail))


def _apply(data: bytes, changes: list[tuple[int, int]]) -> bytearray:
    changed = bytearray(data)
    for position, value in changes:
        changed[position] = value
    return changed


@FAST
@given(st.one_of(st.binary(max_size=512), mutated(VALID)))
def test_a_model_file_parses_or_is_invalid(data: bytes) -> None:
    try:
        decode_model(data)
    except InvalidModelFile:
        pass


@FAST
@given(mutated(ENVELOPE))
def test_an_envelope_opens_or_is_an_envelope_error(data: bytes) -> None:
    try:
        open_envelope(data, OPENER.x25519_private, EXPECTED)
    except EnvelopeError:
        pass


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=80), st.binary(max_size=40))
records = st.dictionaries(st.sampled_from(["participant", "round", "attempt", "cid", "examples", "r", "vs",
                                           "model", "metrics", "signature", "validator", "disputes", "junk"]),
                          scalars, max_size=9)


@FAST
@given(st.one_of(records, scalars, st.lists(scalars, max_size=3)))
def test_a_receipt_an_evaluation_or_an_attestation_report_parses_or_is_malformed(record: object) -> None:
    for parse in (lambda: Receipt.from_record(record, ticket=TICKET, sender=SENDER.address, chain_id=5,  # type: ignore[arg-type]
                                              federation=FEDERATION),
                  lambda: Evaluation.from_record(record, federation=FEDERATION, chain_id=5),  # type: ignore[arg-type]
                  lambda: AttestationReport.from_record(record, sender=SENDER.address)):  # type: ignore[arg-type]
        try:
            parse()
        except MalformedMessage:
            pass


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_a_run_config_reads_or_is_refused(config_dir: Path, text: str) -> None:
    (config_dir / "config.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        read_run_config(config_dir)
    except UsageError:
        pass


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(alphabet='[]{}"\\ab,:'),
                                     st.floats(allow_nan=False, allow_infinity=False)),
                           lambda children: st.one_of(st.lists(children, max_size=4),
                                                      st.dictionaries(st.text(alphabet='[]{}"\\x'), children,
                                                                      max_size=4)),
                           max_leaves=30)


@FAST
@given(json_values)
def test_untrusted_json_parses_as_json_does(value: object) -> None:
    text = json.dumps(value)
    assert parse_json(text) == json.loads(text)


def test_untrusted_json_nested_too_deeply_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        parse_json("[" * 100_000 + "]" * 100_000)  # would crash the process under the EVM's recursion limit
    assert parse_json("[" * 64 + "]" * 64) is not None
    assert parse_json(json.dumps({"a": "[" * 1000})) == {"a": "[" * 1000}  # brackets in strings do not count


def test_an_attestation_report_speaks_only_for_the_validator_that_sent_it() -> None:
    report = AttestationReport(SENDER.address, TICKET.base, "0xabc was excluded but its update is valid")
    assert AttestationReport.from_record(report.to_record(), sender=SENDER.address) == report
    with pytest.raises(MalformedMessage, match="speaks for another validator"):
        AttestationReport.from_record(report.to_record(), sender="0x" + "22" * 20)
