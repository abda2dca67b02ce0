"""The round protocol, top to bottom: open, commit, collect, aggregate, finalize, attest.

One module for every role, so a newcomer reads a round in order:

1. the aggregator **opens** round r on the latest accepted global model (`open_round`);
2. each participant fetches that model by its on-chain CID, trains, **commits**: seals
   its update for the aggregator and the validators, stores it, and signs a commitment
   (`fetch_global_model`, `commit_update`);
3. the aggregator relays the signed commitments, then **collects** the updates by the
   CIDs the chain recorded, never by what a transport handed it, retrying a fetch before
   it gives up on a blob (`relay`, `collect`);
4. it **aggregates** deterministically, stores the global model and **finalizes** the
   round with the included set and, for every other commitment, the reason it was
   excluded (`aggregate`, `finalize`);
5. validators re-compute the aggregate from the chain and the store and **attest** the
   CID they get; k equal attestations make the model accepted (`recompute`, `attest`).

Nothing here knows how messages travel (Flower, or anything else).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.federation import CommitmentRecord, ExclusionReason, RelayOutcome, Role, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.codec import decode_model, encode_model, schema_hash
from fl_chain.envelope import ExpectedUpdate, UpdateHeader, open_envelope, seal_encoded
from fl_chain.errors import (
    EnvelopeError,
    FlChainError,
    InvalidModelFile,
    NonFiniteValues,
    NotARecipient,
    SchemaMismatch,
    StoreError,
    TamperedEnvelope,
    UsageError,
    WrongChain,
    WrongFederation,
    WrongRound,
    WrongSender,
)
from fl_chain.identity import Identity
from fl_chain.storage.blockstore import ContentStore
from fl_chain.storage.cid import Cid
from fl_chain.storage.unixfs import cid_of
from fl_chain.timing import Stopwatch, timed

Tensors = Mapping[str, np.ndarray]
GLOBAL_MODEL_FORMAT = "1"


class ProtocolError(FlChainError):
    """A party's view of a round disagrees with the chain."""


class WrongExamples(ProtocolError):
    """An update's header claims another number of examples than its commitment."""


@dataclass(frozen=True)
class Federation:
    """The two shared facts every role works against: the contract and the content store."""

    ledger: Ledger
    store: ContentStore

    @property
    def address(self) -> str:
        return self.ledger.address

    @property
    def chain_id(self) -> int:
        return self.ledger.chain.chain_id


@dataclass(frozen=True)
class RoundTicket:
    """What the aggregator announces to participants; each checks it against the chain."""

    round: int
    attempt: int
    base: Cid
    deadline: int


@dataclass(frozen=True)
class Exclusion:
    """An update left out of the aggregate: the reason in words (for metrics and audit) and
    its code, which `finalize` records on chain. A commitment the contract refused has no
    code: it never counted as committed, so there is nothing to exclude on chain."""

    participant: str
    reason: str
    code: ExclusionReason | None = None


@dataclass(frozen=True)
class FetchRetries:
    """How long a blob may take to appear: `attempts` fetches, the first wait `first_delay`
    seconds, each next one doubled up to `max_delay`. A blob may be stored just after its
    commitment, or a store may fail for a moment, so one failed fetch excludes nobody."""

    attempts: int = 4
    first_delay: float = 0.25
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            raise UsageError(f"fetch retries need attempts >= 1 and 0 <= first_delay <= max_delay, got {self}")

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than the attempts)."""
        return [min(self.first_delay * 2**n, self.max_delay) for n in range(self.attempts - 1)]


DEFAULT_RETRIES = FetchRetries()
NO_RETRIES = FetchRetries(attempts=1, first_delay=0.0, max_delay=0.0)


@dataclass(frozen=True)
class CollectedUpdates:
    updates: tuple[WeightedUpdate, ...]
    exclusions: tuple[Exclusion, ...]

    @property
    def included(self) -> list[str]:
        return [update.sender for update in self.updates]


# ---------------------------------------------------------------- global models


def encode_global_model(federation: Federation, round_number: int, tensors: Tensors) -> bytes:
    """The global model file: safetensors whose header names the federation and round."""
    metadata = {
        "fl-chain.kind": "global-model",
        "fl-chain.format": GLOBAL_MODEL_FORMAT,
        "fl-chain.federation": federation.address,
        "fl-chain.chain-id": str(federation.chain_id),
        "fl-chain.round": str(round_number),
        "fl-chain.schema": schema_hash(tensors),
    }
    return encode_model(tensors, metadata)


def publish_genesis_model(store: ContentStore, tensors: Tensors) -> Cid:
    """Round 0's model is stored before the federation exists, so it names no federation."""
    cid = store.put(encode_model(tensors, {"fl-chain.kind": "genesis-model", "fl-chain.format": GLOBAL_MODEL_FORMAT}))
    store.pin(cid)
    return cid


def load_model(store: ContentStore, cid: Cid) -> dict[str, np.ndarray]:
    """A model by CID; the store verifies the bytes against the CID."""
    tensors, _ = decode_model(store.get(cid))
    return tensors


# ---------------------------------------------------------------- 1. open


def open_round(federation: Federation, aggregator: Identity, round_number: int) -> RoundTicket:
    _, base = federation.ledger.latest_accepted()
    state = federation.ledger.open_round(aggregator.account, round_number, base)
    return RoundTicket(round_number, state.attempt, base, state.deadline)


# ---------------------------------------------------------------- 2. commit (participant)


def fetch_global_model(federation: Federation, ticket: RoundTicket) -> dict[str, np.ndarray]:
    """The model to train from, after checking the announcement against the chain."""
    state = federation.ledger.round(ticket.round)
    if state.status != RoundStatus.OPEN or state.attempt != ticket.attempt:
        raise ProtocolError(
            f"round {ticket.round} attempt {ticket.attempt} was announced, but on chain the round is "
            f"{state.status.name.lower()} at attempt {state.attempt}"
        )
    if state.base != ticket.base:
        raise ProtocolError(
            f"round {ticket.round} was announced on model {ticket.base}, but the chain says it starts from {state.base}"
        )
    return load_model(federation.store, ticket.base)


def update_recipients(federation: Federation) -> list[bytes]:
    """X25519 keys that may open updates: the current aggregator's and every validator's."""
    aggregator = federation.ledger.aggregator()
    keys = {
        member.x25519
        for member in federation.ledger.members()
        if member.active and (member.address == aggregator or Role.VALIDATOR in member.roles)
    }
    return sorted(keys)


def sealing_randomness(identity: Identity) -> bytes:
    """Secret, per-participant randomness for sealing, so that a re-run with the same keys
    produces byte-identical envelopes (and CIDs) while content keys stay unique per message."""
    return hmac.new(bytes(identity.account.key), b"fl-chain/sealing-randomness/v1", hashlib.sha256).digest()


def commit_update(
    federation: Federation,
    participant: Identity,
    ticket: RoundTicket,
    tensors: Tensors,
    examples: int,
    stopwatch: Stopwatch | None = None,
    recipients: Sequence[bytes] | None = None,
) -> SignedCommitment:
    """Seals, stores and signs an update; returns the receipt the aggregator relays.

    `recipients` (what `update_recipients` gives) lets a process that commits for many
    simulated participants read them once per round: the read walks every member.
    """
    if recipients is None:
        with timed(stopwatch, "recipients"):
            recipients = update_recipients(federation)
    header = UpdateHeader(
        federation=federation.address,
        chain_id=federation.chain_id,
        round=ticket.round,
        sender=participant.address,
        schema_hash=schema_hash(tensors),
        examples=examples,
    )
    with timed(stopwatch, "encode"):
        payload = encode_model(tensors, {})
    with timed(stopwatch, "encrypt"):
        blob = seal_encoded(payload, header, recipients, sealing_randomness(participant))
    with timed(stopwatch, "store"):
        cid = federation.store.put(blob)
        federation.store.pin(cid)
    with timed(stopwatch, "sign"):
        return federation.ledger.sign(participant.account, ticket.round, ticket.attempt, cid, examples)


# ---------------------------------------------------------------- 3. relay and collect (aggregator)


def relay(federation: Federation, relayer: Identity, receipts: Iterable[SignedCommitment]) -> RelayOutcome | None:
    """Relays receipts in address order (so the ledger does not depend on arrival order)."""
    ordered = sorted(receipts, key=lambda signed: int(signed.commitment.participant, 16))
    return federation.ledger.relay(relayer.account, ordered) if ordered else None


def collect(
    federation: Federation,
    opener: X25519PrivateKey,
    round_number: int,
    base_model: Tensors,
    only: Iterable[str] | None = None,
    stopwatch: Stopwatch | None = None,
    retries: FetchRetries = DEFAULT_RETRIES,
) -> CollectedUpdates:
    """Fetches and opens the updates the chain says were committed in this round.

    An update that cannot be fetched (after `retries`) or opened is excluded with its
    reason, not fatal: one participant's bad blob must not stop the round.
    """
    wanted = {address.lower() for address in only} if only is not None else None
    expected_schema = schema_hash(base_model)
    updates, exclusions = [], []
    for record in federation.ledger.commitments(round_number):
        if wanted is not None and record.participant.lower() not in wanted:
            continue
        outcome = open_update(federation, opener, record, expected_schema, retries, stopwatch)
        (exclusions if isinstance(outcome, Exclusion) else updates).append(outcome)
    return CollectedUpdates(tuple(updates), tuple(exclusions))


def open_update(
    federation: Federation,
    opener: X25519PrivateKey,
    record: CommitmentRecord,
    expected_schema: str,
    retries: FetchRetries = DEFAULT_RETRIES,
    stopwatch: Stopwatch | None = None,
) -> WeightedUpdate | Exclusion:
    """One committed update, fetched, authenticated and checked, or why it must be excluded.

    The aggregator, the validators and the auditor all judge an update with this, so an
    exclusion recorded on chain can be re-checked by anyone holding an opening key.
    """
    expected = ExpectedUpdate(
        federation=federation.address,
        chain_id=federation.chain_id,
        round=record.round,
        sender=record.participant,
        schema_hash=expected_schema,
    )
    try:
        with timed(stopwatch, "fetch_updates"):
            blob = fetch_blob(federation.store, record.cid, retries)
        with timed(stopwatch, "open_updates"):
            opened = open_envelope(blob, opener, expected)
        if opened.header.examples != record.examples:
            raise WrongExamples(
                f"the update of {record.participant} claims {opened.header.examples} examples, "
                f"its commitment {record.examples}"
            )
    except (StoreError, EnvelopeError, ProtocolError) as error:
        code = exclusion_code(error)
        return Exclusion(record.participant, f"{code.explain(record.participant, record.round)}: {error}", code)
    return WeightedUpdate(record.participant, record.examples, opened.tensors)


def fetch_blob(store: ContentStore, cid: Cid, retries: FetchRetries = DEFAULT_RETRIES) -> bytes:
    """A blob by CID, fetched again after a short wait while the store fails (missing,
    corrupted or unreachable); the last failure is raised, saying how often it was tried."""
    delays = retries.delays()
    for delay in delays:
        try:
            return store.get(cid)
        except StoreError:
            time.sleep(delay)
    try:
        return store.get(cid)
    except StoreError as error:
        if not delays:
            raise
        raise StoreError(f"{error} (gave up after {retries.attempts} attempts in {sum(delays):.2f} s)") from error


# The first matching class names the reason; order matters where classes are nested.
_EXCLUSION_CODES: tuple[tuple[type[FlChainError], ExclusionReason], ...] = (
    (StoreError, ExclusionReason.UNAVAILABLE),
    (TamperedEnvelope, ExclusionReason.UNDECRYPTABLE),  # also MalformedEnvelope: truncated, not an envelope
    (NotARecipient, ExclusionReason.UNDECRYPTABLE),
    (WrongFederation, ExclusionReason.WRONG_HEADER),
    (WrongChain, ExclusionReason.WRONG_HEADER),
    (WrongRound, ExclusionReason.WRONG_HEADER),
    (WrongSender, ExclusionReason.WRONG_HEADER),
    (WrongExamples, ExclusionReason.WRONG_HEADER),
    (SchemaMismatch, ExclusionReason.WRONG_SHAPE),  # declared or actual schema differs from the base model's
    (InvalidModelFile, ExclusionReason.WRONG_SHAPE),  # authentic, but the payload holds no tensors we read
    (NonFiniteValues, ExclusionReason.NON_FINITE),
)


def exclusion_code(error: FlChainError) -> ExclusionReason:
    """The on-chain reason for excluding an update that failed with `error`."""
    for kind, code in _EXCLUSION_CODES:
        if isinstance(error, kind):
            return code
    return ExclusionReason.UNDECRYPTABLE  # any other failure to open the envelope


# ---------------------------------------------------------------- 4. aggregate and finalize


def aggregate(federation: Federation, round_number: int, collected: CollectedUpdates) -> tuple[dict[str, np.ndarray], Cid]:
    """Deterministic FedAvg of the collected updates, stored as the round's global model."""
    tensors = federated_average(collected.updates)
    cid = federation.store.put(encode_global_model(federation, round_number, tensors))
    federation.store.pin(cid)
    return tensors, cid


def finalize(
    federation: Federation,
    aggregator: Identity,
    round_number: int,
    global_model: Cid,
    included: Sequence[str],
    exclusions: Sequence[Exclusion],
) -> None:
    """Records the round's result; the contract refuses it unless every commitment is
    included or excluded with its reason code."""
    uncoded = [exclusion.participant for exclusion in exclusions if exclusion.code is None]
    if uncoded:
        raise ProtocolError(
            f"round {round_number}: {', '.join(uncoded)} cannot be excluded on chain without a reason code "
            "(a refused commitment was never committed, so it is not an exclusion)"
        )
    excluded = [(exclusion.participant, exclusion.code) for exclusion in exclusions if exclusion.code is not None]
    federation.ledger.finalize(aggregator.account, round_number, global_model, included, excluded)


# ---------------------------------------------------------------- 5. validate and attest


def recompute(federation: Federation, validator: Identity, round_number: int) -> Cid:
    """Re-computes a finalized round from the chain and the store alone.

    The validator trusts nothing the aggregator said: it reads the included set and the
    commitments from the chain, opens the updates with its own key, and averages them.
    """
    state = federation.ledger.round(round_number)
    if state.status not in (RoundStatus.FINALIZED, RoundStatus.ACCEPTED) or state.base is None:
        raise ProtocolError(f"round {round_number} is {state.status.name.lower()}, not finalized: nothing to validate")
    included = federation.ledger.included(round_number)
    collected = collect(federation, validator.x25519_private, round_number, load_model(federation.store, state.base), included)
    if collected.exclusions:
        reasons = "; ".join(f"{e.participant}: {e.reason}" for e in collected.exclusions)
        raise ProtocolError(f"round {round_number} includes updates that do not open: {reasons}")
    return cid_of(encode_global_model(federation, round_number, federated_average(collected.updates)))


def attest(federation: Federation, validator: Identity, round_number: int, global_model: Cid) -> int:
    """Attests the validator's own result on chain; returns the gas it cost."""
    return int(federation.ledger.attest(validator.account, round_number, global_model)["gasUsed"])
