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
   round with the included set and, for every other commitment it read, the reason it was
   excluded; commitments after those are excluded by the contract as late, and an attempt
   with fewer valid updates than the quorum fails instead (`aggregate`, `finalize`);
5. validators **judge** the finalized attempt from the chain and the store alone: they
   re-open every update (excluded ones too), re-aggregate what should have been included,
   and **attest** the CID they get; k equal attestations from the attempt's committee,
   and no dissent, make the model accepted (`judge`, `attest`).

Every update is judged by `open_update` against the round's `UpdateRules` (the base
model's schema, the federation's norm bound, a size cap), so the aggregator, each
validator and the auditor reach the same verdict on the same bytes.

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

from fl_chain.aggregation import WeightedUpdate
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.federation import CommitmentRecord, ExclusionReason, RelayOutcome, Role, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.codec import MAX_MODEL_BYTES, decode_model, encode_model, schema_hash
from fl_chain.envelope import ExpectedUpdate, UpdateHeader, is_usable_recipient
from fl_chain.errors import (
    BlobTooLarge,
    EnvelopeError,
    FlChainError,
    InvalidModelFile,
    MalformedDag,
    NonFiniteValues,
    NotARecipient,
    OutOfBounds,
    SchemaMismatch,
    StoreError,
    TamperedEnvelope,
    UsageError,
    WrongChain,
    WrongFederation,
    WrongRecipients,
    WrongRound,
    WrongSender,
)
from fl_chain.identity import Identity
from fl_chain.messages import Ticket
from fl_chain.outliers import Screening, UpdateScore, screen
from fl_chain.privacy import SEALED, PrivacyMode
from fl_chain.rules import AggregationRule, rule_for
from fl_chain.storage.blockstore import ContentStore
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.dag import MAX_BLOB_BYTES
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
    """The two shared facts every role works against, the contract and the content store,
    and the privacy mode the experiment names (bound by the task hash; `sealed` unless
    said otherwise)."""

    ledger: Ledger
    store: ContentStore
    privacy: PrivacyMode = SEALED

    @property
    def address(self) -> str:
        return self.ledger.address

    @property
    def chain_id(self) -> int:
        return self.ledger.chain.chain_id

    @property
    def rule(self) -> AggregationRule:
        """The aggregation rule the federation records: what every role combines updates with."""
        parameters = self.ledger.parameters()
        rule = rule_for(parameters.aggregation_rule, parameters.rule_parameters)
        rule.check(parameters.quorum)  # a deployer writing the contract directly skips the config's check
        return rule


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
    """The updates of the first `seen` commitments of a round, opened or excluded."""

    updates: tuple[WeightedUpdate, ...]
    exclusions: tuple[Exclusion, ...]
    seen: int = 0

    @property
    def included(self) -> list[str]:
        return [update.sender for update in self.updates]


# A global model's blob may be a little larger than its base (metadata) and an update's is
# its tensors plus the envelope; anything far beyond that is refused before it is read.
BLOB_SLACK = 8 << 20


@dataclass(frozen=True)
class UpdateRules:
    """What every update of a round must be, from the chain: the base model's tensor schema,
    within `norm_bound` (L2, float64) of the base model, at most `max_blob` bytes, and
    sealed for exactly the round's `recipients` (so that whoever must judge it can)."""

    base: Mapping[str, np.ndarray]
    schema: str
    norm_bound: float
    max_blob: int
    recipients: frozenset[bytes]

    @classmethod
    def of(cls, base: Mapping[str, np.ndarray], norm_bound: float, recipients: Iterable[bytes]) -> UpdateRules:
        return cls(base, schema_hash(base), norm_bound, model_cap(base), frozenset(recipients))

    @classmethod
    def for_round(cls, federation: Federation, round_number: int) -> UpdateRules:
        """The rules of the current attempt of a round, as every party reads them from the chain."""
        state = federation.ledger.round(round_number)
        if state.base is None:
            raise ProtocolError(f"round {round_number} has not opened: it has no rules yet")
        return cls.of(load_model(federation.store, state.base), federation.ledger.parameters().update_norm_bound,
                      update_recipients(federation, round_number))


def model_cap(base: Mapping[str, np.ndarray]) -> int:
    """The most bytes a blob derived from `base` (an update of it, or the next global model)
    may take: anything larger is refused before it is read."""
    return 2 * sum(np.asarray(tensor).nbytes for tensor in base.values()) + BLOB_SLACK


def distance(update: Tensors, base: Tensors) -> float:
    """The L2 distance of an update from its base model, over every tensor, in float64."""
    total = 0.0
    for name in sorted(base):
        difference = np.asarray(update[name], dtype=np.float64) - np.asarray(base[name], dtype=np.float64)
        total += float(np.dot(difference.ravel(), difference.ravel()))
    return float(np.sqrt(total))


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


def load_model(store: ContentStore, cid: Cid, max_size: int = MAX_MODEL_BYTES) -> dict[str, np.ndarray]:
    """A model by CID; the store verifies the bytes against the CID and refuses one that
    declares more than `max_size` bytes before reading it."""
    tensors, _ = decode_model(store.get(cid, max_size=max_size))
    return tensors


# ---------------------------------------------------------------- 1. open


def open_round(federation: Federation, aggregator: Identity, round_number: int) -> Ticket:
    _, base = federation.ledger.latest_accepted()
    state = federation.ledger.open_round(aggregator.account, round_number, base)
    return Ticket(round_number, state.attempt, base, state.deadline)


# ---------------------------------------------------------------- 2. commit (participant)


def fetch_global_model(federation: Federation, ticket: Ticket) -> dict[str, np.ndarray]:
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


def update_recipients(federation: Federation, round_number: int | None = None) -> list[bytes]:
    """X25519 keys that may open updates: the aggregator's and every validator's. For a
    round (`round_number`): the aggregator as the chain stood when
    it opened and the validators the contract froze then (the only ones that can attest
    it), so every party computes the same set whatever the admin changes mid-round. A key
    nobody can seal for (a point of small order) is skipped: one bad member card must not
    stop everyone from sealing."""
    ledger = federation.ledger
    opened_block = ledger.round(round_number).opened_block if round_number is not None else None
    aggregator = ledger.aggregator(opened_block)
    members = ledger.members(opened_block)
    if round_number is not None:
        frozen = set(ledger.frozen_validators(round_number))
        chosen = [m for m in members if m.address == aggregator or m.address in frozen]
    else:
        chosen = [m for m in members if m.active and (m.address == aggregator or Role.VALIDATOR in m.roles)]
    return sorted({m.x25519 for m in chosen if is_usable_recipient(m.x25519)})


def sealing_randomness(identity: Identity) -> bytes:
    """Secret, per-participant randomness for sealing, from its own X25519 key (a secret of
    the run, never derived from anything public), so that sealing the same update again
    gives the same envelope and CID while content keys stay unique per message."""
    secret = identity.x25519_private.private_bytes_raw()
    return hmac.new(secret, b"fl-chain/sealing-randomness/v2", hashlib.sha256).digest()


def commit_update(
    federation: Federation,
    participant: Identity,
    ticket: Ticket,
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
            recipients = update_recipients(federation, ticket.round)
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
        blob = federation.privacy.seal(payload, header, recipients, sealing_randomness(participant))
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
    rules: UpdateRules,
    only: Iterable[str] | None = None,
    stopwatch: Stopwatch | None = None,
    retries: FetchRetries = DEFAULT_RETRIES,
) -> CollectedUpdates:
    """Fetches and opens the updates the chain says were committed in this round.

    An update that cannot be fetched (after `retries`), opened or that breaks the round's
    rules is excluded with its reason, not fatal: one participant's bad blob must not stop
    the round. `seen` is how many commitments the chain held when they were read.
    """
    wanted = {address.lower() for address in only} if only is not None else None
    records = federation.ledger.commitments(round_number)
    updates, exclusions = [], []
    for record in records:
        if wanted is not None and record.participant.lower() not in wanted:
            continue
        outcome = open_update(federation, opener, record, rules, retries, stopwatch)
        (exclusions if isinstance(outcome, Exclusion) else updates).append(outcome)
    return CollectedUpdates(tuple(updates), tuple(exclusions), len(records))


def open_update(
    federation: Federation,
    opener: X25519PrivateKey,
    record: CommitmentRecord,
    rules: UpdateRules,
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
        schema_hash=rules.schema,
        recipients=rules.recipients,
    )
    try:
        with timed(stopwatch, "fetch_updates"):
            blob = fetch_blob(federation.store, record.cid, retries, rules.max_blob)
        with timed(stopwatch, "open_updates"):
            opened = federation.privacy.open(blob, opener, expected)
            if opened.header.examples != record.examples:
                raise WrongExamples(
                    f"the update of {record.participant} claims {opened.header.examples} examples, "
                    f"its commitment {record.examples}"
                )
            moved = distance(opened.tensors, rules.base)
            if not moved <= rules.norm_bound:
                raise OutOfBounds(f"the update of {record.participant} is {moved:.6g} from the base model, "
                                  f"beyond the federation's bound of {rules.norm_bound:g}")
    except (StoreError, EnvelopeError, ProtocolError) as error:
        code = exclusion_code(error)
        return Exclusion(record.participant, f"{code.explain(record.participant, record.round)}: {error}", code)
    return WeightedUpdate(record.participant, record.examples, opened.tensors)


def fetch_blob(store: ContentStore, cid: Cid, retries: FetchRetries = DEFAULT_RETRIES,
               max_size: int = MAX_BLOB_BYTES) -> bytes:
    """A blob by CID, fetched again after a short wait while the store fails (missing,
    corrupted or unreachable); the last failure is raised, saying how often it was tried.
    A blob declaring more than `max_size` bytes is refused at once, without reading it."""
    delays = retries.delays()
    for delay in delays:
        try:
            return store.get(cid, max_size=max_size)
        except (BlobTooLarge, MalformedDag):  # the same bytes, the same verdict: no point asking again
            raise
        except StoreError:
            time.sleep(delay)
    try:
        return store.get(cid, max_size=max_size)
    except StoreError as error:
        if not delays:
            raise
        raise StoreError(f"{error} (gave up after {retries.attempts} attempts in {sum(delays):.2f} s)") from error


# The first matching class names the reason; order matters where classes are nested.
_EXCLUSION_CODES: tuple[tuple[type[FlChainError], ExclusionReason], ...] = (
    (BlobTooLarge, ExclusionReason.WRONG_SHAPE),  # its root block declares it: anyone can check
    (MalformedDag, ExclusionReason.WRONG_SHAPE),  # its blocks are there and are not a file we read
    (StoreError, ExclusionReason.UNAVAILABLE),
    (TamperedEnvelope, ExclusionReason.UNDECRYPTABLE),  # also MalformedEnvelope: truncated, not an envelope
    (NotARecipient, ExclusionReason.UNDECRYPTABLE),
    (WrongRecipients, ExclusionReason.UNDECRYPTABLE),
    (WrongFederation, ExclusionReason.WRONG_HEADER),
    (WrongChain, ExclusionReason.WRONG_HEADER),
    (WrongRound, ExclusionReason.WRONG_HEADER),
    (WrongSender, ExclusionReason.WRONG_HEADER),
    (WrongExamples, ExclusionReason.WRONG_HEADER),
    (SchemaMismatch, ExclusionReason.WRONG_SHAPE),  # declared or actual schema differs from the base model's
    (InvalidModelFile, ExclusionReason.WRONG_SHAPE),  # authentic, but the payload holds no tensors we read
    (NonFiniteValues, ExclusionReason.NON_FINITE),
    (OutOfBounds, ExclusionReason.OUT_OF_BOUNDS),
)


def exclusion_code(error: FlChainError) -> ExclusionReason:
    """The on-chain reason for excluding an update that failed with `error`."""
    for kind, code in _EXCLUSION_CODES:
        if isinstance(error, kind):
            return code
    return ExclusionReason.UNDECRYPTABLE  # any other failure to open the envelope


# ---------------------------------------------------------------- 4. screen, aggregate and finalize


def screen_outliers(federation: Federation, round_number: int, collected: CollectedUpdates,
                    base: Tensors) -> tuple[CollectedUpdates, Screening]:
    """The collected updates after the federation's outlier test (recorded with its rule):
    the flagged ones move to the exclusions with the `outlier` code and their scores."""
    screening = screen(collected.updates, base, federation.rule.outliers, federation.ledger.parameters().quorum)
    outliers = tuple(
        Exclusion(update.sender, f"{ExclusionReason.OUTLIER.explain(update.sender, round_number)}: "
                                 f"{screening.score_of(update.sender).describe(screening.threshold)}",
                  ExclusionReason.OUTLIER)
        for update in screening.outliers)
    return CollectedUpdates(screening.kept, collected.exclusions + outliers, collected.seen), screening


def aggregate(federation: Federation, round_number: int, collected: CollectedUpdates,
              base: Tensors) -> tuple[dict[str, np.ndarray], Cid]:
    """The federation's rule (from the chain) over the collected updates and the round's
    base model, stored as the round's global model."""
    tensors = federation.privacy.combine(federation.rule, collected.updates, base)
    cid = federation.store.put(encode_global_model(federation, round_number, tensors))
    federation.store.pin(cid)
    return tensors, cid


def finalize(
    federation: Federation,
    aggregator: Identity,
    round_number: int,
    global_model: Cid,
    collected: CollectedUpdates,
) -> RoundStatus:
    """Records the round's result: every commitment the aggregator read is included or
    excluded with its reason code (later ones the contract excludes as late). With fewer
    valid updates than the quorum the attempt fails; returns FINALIZED or FAILED."""
    uncoded = [exclusion.participant for exclusion in collected.exclusions if exclusion.code is None]
    if uncoded:
        raise ProtocolError(
            f"round {round_number}: {', '.join(uncoded)} cannot be excluded on chain without a reason code "
            "(a refused commitment was never committed, so it is not an exclusion)"
        )
    excluded = [(exclusion.participant, exclusion.code) for exclusion in collected.exclusions
                if exclusion.code is not None]
    federation.ledger.finalize(aggregator.account, round_number, global_model, collected.included, excluded,
                               seen=collected.seen)
    return federation.ledger.round(round_number).status


# ---------------------------------------------------------------- 5. judge and attest

# What a validator attests when the attempt should not have been finalized at all (fewer
# valid updates than the quorum): a CID no aggregate can have, so the attestation dissents.
NO_VALID_AGGREGATE = Cid(RAW, hashlib.sha256(b"fl-chain: this attempt has no valid aggregate").digest())


@dataclass(frozen=True)
class Judgement:
    """A validator's verdict on a finalized attempt: the model it attests (its own
    aggregate of what should be included) and what it found wrong, if anything."""

    model: Cid
    disputes: tuple[str, ...] = ()
    scores: tuple[UpdateScore, ...] = ()  # the validator's own outlier-test scores of the valid updates


def judge(federation: Federation, validator: Identity, round_number: int,
          retries: FetchRetries = DEFAULT_RETRIES) -> Judgement:
    """Re-judges a finalized attempt from the chain and the store alone.

    The validator trusts nothing the aggregator said: it reads the commitments, the
    included set and the exclusions from the chain and opens every update with its own
    key. An excluded update that is valid (except one excluded as unavailable: when a
    blob appeared cannot be judged later), a late exclusion of a commitment the
    aggregator had read, or an included update that is not valid, is a dispute: the
    validator then aggregates what should have been included, so its attestation
    dissents. An update it cannot fetch itself makes it refuse to judge (ProtocolError).
    """
    state = federation.ledger.round(round_number)
    if state.status not in (RoundStatus.FINALIZED, RoundStatus.ACCEPTED) or state.base is None:
        raise ProtocolError(f"round {round_number} is {state.status.name.lower()}, not finalized: nothing to judge")
    records = federation.ledger.commitments(round_number)
    exclusions = dict(federation.ledger.exclusions(round_number))
    included = set(federation.ledger.included(round_number))
    rules = UpdateRules.for_round(federation, round_number)
    disputes: list[str] = []
    valid: list[WeightedUpdate] = []
    last_accounted = max((i for i, r in enumerate(records) if exclusions.get(r.participant) != ExclusionReason.LATE),
                         default=-1)
    for position, record in enumerate(records):
        claimed = exclusions.get(record.participant)
        outcome = open_update(federation, validator.x25519_private, record, rules, retries)
        if isinstance(outcome, Exclusion) and outcome.code == ExclusionReason.UNAVAILABLE and (
                claimed is None or claimed not in (ExclusionReason.UNAVAILABLE, ExclusionReason.LATE)):
            raise ProtocolError(f"round {round_number}: cannot judge, {outcome.reason}")
        if record.participant in included:
            if isinstance(outcome, Exclusion):
                disputes.append(f"{record.participant} is included but its update is not valid: {outcome.reason}")
            else:
                valid.append(outcome)
            continue
        if isinstance(outcome, Exclusion):
            continue  # excluded, and rightly so (whatever the exact code, it is not a valid update)
        if claimed == ExclusionReason.UNAVAILABLE:
            continue
        if claimed == ExclusionReason.LATE and position > last_accounted:
            continue
        valid.append(outcome)  # valid and not rightly left out: the outlier test decides (below)
    quorum = federation.ledger.parameters().quorum
    if len(valid) < quorum:
        return Judgement(NO_VALID_AGGREGATE, (*disputes, f"only {len(valid)} valid updates, below the quorum"))
    screening = screen(valid, rules.base, federation.rule.outliers, quorum)
    disputes += _screening_disputes(screening, included, exclusions)
    model = cid_of(encode_global_model(federation, round_number,
                                       federation.privacy.combine(federation.rule, screening.kept, rules.base)))
    return Judgement(model, tuple(disputes), screening.scores)


def _screening_disputes(screening: Screening, included: set[str],
                        exclusions: Mapping[str, ExclusionReason]) -> list[str]:
    """What a validator's own outlier test says the aggregator got wrong: an outlier it
    included or recorded under another reason, or a valid update that passes the test
    and was left out anyway."""
    disputes = []
    for update in screening.outliers:
        claimed = exclusions.get(update.sender)
        if update.sender in included:
            disputes.append(f"{update.sender} is included but is an outlier: "
                            f"{screening.score_of(update.sender).describe(screening.threshold)}")
        elif claimed != ExclusionReason.OUTLIER:  # a valid update, accused on chain of something it did not do
            disputes.append(f"{update.sender} was excluded as {claimed.label if claimed else 'nothing'}, but its "
                            "update is valid: it is an outlier, and must be recorded as one")
    for update in screening.kept:
        claimed = exclusions.get(update.sender)
        if update.sender not in included:
            reason = "late" if claimed == ExclusionReason.LATE else (claimed.label if claimed else "no reason")
            disputes.append(f"{update.sender} was excluded ({reason}) but its update is valid"
                            + (" and passes the outlier test" if claimed == ExclusionReason.OUTLIER else ""))
    return disputes


def recompute(federation: Federation, validator: Identity, round_number: int) -> Cid:
    """The model a validator attests for a finalized round (see `judge`)."""
    return judge(federation, validator, round_number).model


def attest(federation: Federation, validator: Identity, round_number: int, global_model: Cid) -> int:
    """Attests the validator's own result on chain; returns the gas it cost."""
    return int(federation.ledger.attest(validator.account, round_number, global_model)["gasUsed"])
