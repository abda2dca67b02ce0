"""The messages of a round, defined once and read the same way by both ends.

Each is a small dataclass with `to_record()` (a flat mapping of text to int, float, str or
bytes: what a transport such as Flower's ConfigRecord carries) and a `from_record()` that
trusts nothing: a field that is missing, of the wrong type or out of range, a receipt for
another round or from another node than the one that sent it, or a signature that is not
its signer's, is a `MalformedMessage` naming what is wrong. Whoever reads a message turns
that error into an exclusion of its sender, never into a crash of the round.

Greetings and evaluations are signed with the sender's account (EIP-191), so who said
what can be checked later from the run's files, and a node cannot speak for a member
whose key it does not hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from fl_chain.chain.commitment import Commitment, SignedCommitment, recover_signer
from fl_chain.errors import FlChainError, InvalidCid
from fl_chain.jsonfiles import parse_json
from fl_chain.storage.cid import Cid

Record = Mapping[str, Any]
MAX_UINT64 = 2**64 - 1
SIGNATURE_BYTES = 65


class MalformedMessage(FlChainError):
    """A message does not have the form or the values the protocol allows."""


# ---------------------------------------------------------------- field readers


def _field(record: Record, name: str, what: str) -> Any:
    if not isinstance(record, Mapping):
        raise MalformedMessage(f"{what} is not a record but {type(record).__name__}")
    if name not in record:
        raise MalformedMessage(f"{what} lacks the field {name!r}")
    return record[name]


def read_int(record: Record, name: str, what: str, low: int = 0, high: int = MAX_UINT64) -> int:
    value = _field(record, name, what)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedMessage(f"{what}: {name} must be an integer in [{low}, {high}], got {_shown(value)}")
    return value


MAX_FIGURE = 1e15  # beyond any loss, accuracy, count or duration a participant could measure


def read_float(record: Record, name: str, what: str) -> float:
    value = _field(record, name, what)
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer of hundreds of digits
        number = math.nan
    if not (math.isfinite(number) and abs(number) <= MAX_FIGURE):
        raise MalformedMessage(f"{what}: {name} must be a finite number of at most {MAX_FIGURE:g}, got {_shown(value)}")
    return number


def read_text(record: Record, name: str, what: str, limit: int = 4096) -> str:
    value = _field(record, name, what)
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedMessage(f"{what}: {name} must be text of at most {limit} characters, got {_shown(value)}")
    return value


def read_address(record: Record, name: str, what: str) -> str:
    value = read_text(record, name, what, limit=42)
    if not is_address(value):
        raise MalformedMessage(f"{what}: {name} is not an Ethereum address: {_shown(value)}")
    return to_checksum_address(value)


def read_cid(record: Record, name: str, what: str) -> Cid:
    try:
        return Cid.parse(read_text(record, name, what, limit=128))
    except InvalidCid as error:
        raise MalformedMessage(f"{what}: {name} is not a CID: {error}") from None


def read_hex(record: Record, name: str, what: str, size: int) -> bytes:
    text = read_text(record, name, what, limit=2 * size + 2).removeprefix("0x")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != size:
        raise MalformedMessage(f"{what}: {name} must be {size} bytes in hex, got {_shown(text)}")
    return value


def _shown(value: object, keep: int = 60) -> str:
    """A value from a stranger, safe to print: repr, control characters escaped, cut short."""
    text = repr(value)
    return text if len(text) <= keep else text[:keep] + "…"


def signed_text(kind: str, fields: Mapping[str, Any]) -> str:
    """The text a party signs for a statement of `kind`: the kind and canonical JSON."""
    return f"fl-chain {kind}\n" + json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))


def sign_text(account: LocalAccount, text: str) -> bytes:
    """An EIP-191 signature (65 bytes) of `text` by `account`."""
    return bytes(account.sign_message(encode_defunct(text=text)).signature)


def signer_of(text: str, signature: bytes) -> str | None:
    """The address that signed `text`, or None for a signature that recovers to nobody."""
    try:
        return to_checksum_address(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception:  # noqa: BLE001 - any malformed signature simply has no signer
        return None


# ---------------------------------------------------------------- the round's messages


@dataclass(frozen=True)
class Ticket:
    """What the aggregator announces; each participant checks it against the chain."""

    round: int
    attempt: int
    base: Cid
    deadline: int

    def to_record(self) -> dict[str, Any]:
        return {"round": self.round, "attempt": self.attempt, "base": str(self.base), "deadline": self.deadline}

    @classmethod
    def from_record(cls, record: Record) -> Ticket:
        what = "the round's announcement"
        return cls(read_int(record, "round", what, 1), read_int(record, "attempt", what, 1, 2**32 - 1),
                   read_cid(record, "base", what), read_int(record, "deadline", what))


@dataclass(frozen=True)
class Receipt:
    """A participant's signed commitment, as it travels back to be relayed."""

    signed: SignedCommitment

    @property
    def commitment(self) -> Commitment:
        return self.signed.commitment

    def to_record(self) -> dict[str, Any]:
        c = self.signed.commitment
        return {"participant": c.participant, "round": c.round, "attempt": c.attempt, "cid": str(c.cid),
                "examples": c.examples, "r": self.signed.r.hex(), "vs": self.signed.vs.hex()}

    @classmethod
    def from_record(cls, record: Record, *, ticket: Ticket, sender: str, chain_id: int, federation: str,
                    example_cap: int = MAX_UINT64) -> Receipt:
        """A receipt `sender` sent for `ticket`, after every field and its signature are checked."""
        what = f"the receipt from {sender}"
        participant = read_address(record, "participant", what)
        if participant != to_checksum_address(sender):
            raise MalformedMessage(f"{what} is for another participant, {participant}")
        round_number = read_int(record, "round", what)
        attempt = read_int(record, "attempt", what)
        if (round_number, attempt) != (ticket.round, ticket.attempt):
            raise MalformedMessage(f"{what} is for round {round_number} attempt {attempt}, not round {ticket.round} "
                                   f"attempt {ticket.attempt}")
        examples = read_int(record, "examples", what, 1)
        if examples > example_cap:
            raise MalformedMessage(f"{what} claims {examples} examples, above its cap of {example_cap}")
        commitment = Commitment(participant, round_number, attempt, read_cid(record, "cid", what), examples)
        signed = SignedCommitment(commitment, read_hex(record, "r", what, 32), read_hex(record, "vs", what, 32))
        try:
            signer = recover_signer(signed, chain_id, federation)
        except Exception:  # noqa: BLE001 - an unrecoverable signature has no signer
            signer = None
        if signer != participant:
            raise MalformedMessage(f"{what} carries a signature that is not {participant}'s")
        return cls(signed)


@dataclass(frozen=True)
class Greeting:
    """A node's answer to the aggregator's challenge: the member it speaks for, proven by a
    signature over the federation, the chain, the node and the challenge."""

    address: str
    signature: bytes

    @staticmethod
    def text(federation: str, chain_id: int, node: int, challenge: bytes) -> str:
        return signed_text("greeting", {"federation": federation, "chain_id": chain_id, "node": node,
                                         "challenge": challenge.hex()})

    @classmethod
    def answer(cls, account: LocalAccount, federation: str, chain_id: int, node: int, challenge: bytes) -> Greeting:
        return cls(account.address, sign_text(account, cls.text(federation, chain_id, node, challenge)))

    def to_record(self) -> dict[str, Any]:
        return {"address": self.address, "signature": self.signature.hex()}

    @classmethod
    def from_record(cls, record: Record, *, federation: str, chain_id: int, node: int, challenge: bytes) -> Greeting:
        what = f"the greeting of node {node}"
        greeting = cls(read_address(record, "address", what), read_hex(record, "signature", what, SIGNATURE_BYTES))
        if signer_of(cls.text(federation, chain_id, node, challenge), greeting.signature) != greeting.address:
            raise MalformedMessage(f"{what} claims to speak for {greeting.address} without its signature")
        return greeting


@dataclass(frozen=True)
class AttestationReport:
    """What a validator says of the attestation it sent (or had sent already: no `model`).
    The attestation itself is its transaction on chain, and only that counts; the report
    tells the aggregator, and its log, what the validator disputed."""

    validator: str
    model: Cid | None
    disputes: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"validator": self.validator, "model": str(self.model) if self.model else "", "disputes": self.disputes}

    @classmethod
    def from_record(cls, record: Record, *, sender: str) -> AttestationReport:
        what = f"the attestation report of {sender}"
        validator = read_address(record, "validator", what)
        if validator != to_checksum_address(sender):
            raise MalformedMessage(f"{what} speaks for another validator, {validator}")
        model = read_cid(record, "model", what) if read_text(record, "model", what, 128) else None
        return cls(validator, model, read_text(record, "disputes", what))


@dataclass(frozen=True)
class Evaluation:
    """A participant's measurement of a finalized model on its own test split, signed."""

    participant: str
    round: int
    model: Cid
    metrics: dict[str, float]
    examples: int
    signature: bytes

    @staticmethod
    def text(federation: str, chain_id: int, participant: str, round_number: int, model: Cid,
             metrics: Mapping[str, float], examples: int) -> str:
        return signed_text("evaluation", {"federation": federation, "chain_id": chain_id, "participant": participant,
                                           "round": round_number, "model": str(model), "metrics": dict(metrics),
                                           "examples": examples})

    @classmethod
    def sign(cls, account: LocalAccount, federation: str, chain_id: int, round_number: int, model: Cid,
             metrics: Mapping[str, float], examples: int) -> Evaluation:
        clean = {name: float(value) for name, value in sorted(metrics.items())}
        text = cls.text(federation, chain_id, account.address, round_number, model, clean, examples)
        return cls(account.address, round_number, model, clean, examples, sign_text(account, text))

    def to_record(self) -> dict[str, Any]:
        return {"participant": self.participant, "round": self.round, "model": str(self.model),
                "metrics": json.dumps(self.metrics, sort_keys=True), "examples": self.examples,
                "signature": self.signature.hex()}

    def to_json(self) -> dict[str, Any]:
        return {**self.to_record(), "metrics": self.metrics}

    @classmethod
    def from_record(cls, record: Record, *, federation: str, chain_id: int) -> Evaluation:
        """An evaluation whose fields and signature are checked (not yet who may evaluate what)."""
        what = "an evaluation"
        participant = read_address(record, "participant", what)
        what = f"the evaluation of {participant}"
        metrics_field = record.get("metrics") if isinstance(record, Mapping) else None
        if isinstance(metrics_field, str):
            try:
                metrics_field = parse_json(metrics_field) if len(metrics_field) <= 4096 else None
            except ValueError:
                metrics_field = None
        if not isinstance(metrics_field, dict) or not metrics_field or len(metrics_field) > 32:
            raise MalformedMessage(f"{what}: metrics must be a mapping of up to 32 names to numbers")
        if not all(isinstance(name, str) and 0 < len(name) <= 64 for name in metrics_field):
            raise MalformedMessage(f"{what}: metric names must be text of 1 to 64 characters")
        metrics = {name: read_float(metrics_field, name, what) for name in sorted(metrics_field)}
        evaluation = cls(participant, read_int(record, "round", what, 1), read_cid(record, "model", what), metrics,
                         read_int(record, "examples", what, 1), read_hex(record, "signature", what, SIGNATURE_BYTES))
        text = cls.text(federation, chain_id, participant, evaluation.round, evaluation.model, metrics,
                        evaluation.examples)
        if signer_of(text, evaluation.signature) != participant:
            raise MalformedMessage(f"{what} is not signed by {participant}")
        return evaluation


def weighted_metrics(evaluations: Sequence[Evaluation]) -> dict[str, float]:
    """Each metric's example-weighted mean over the evaluations that report it, summed in
    participant address order so that the figure is the same whoever recomputes it."""
    ordered = sorted(evaluations, key=lambda evaluation: int(evaluation.participant, 16))
    result = {}
    for name in sorted({name for evaluation in ordered for name in evaluation.metrics}):
        reporting = [evaluation for evaluation in ordered if name in evaluation.metrics]
        total = sum(evaluation.examples for evaluation in reporting)
        result[name] = sum(evaluation.metrics[name] * evaluation.examples for evaluation in reporting) / total
    return result
