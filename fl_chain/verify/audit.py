"""The audit: every check `flchain verify` makes, from the chain, the store and the run files.

The chain's event log is walked in order, keeping the membership, the aggregator and the
accepted model as they were at each event, so each commitment is judged by the rules in
force at its block (member, deadline, once, within its example cap), each finalized
attempt must account for every commitment (included, excluded with a reason, or late
after all of those), its committee must be the one the contract's rule draws, and a round
is accepted only with the threshold of committee attestations and no dissent.

Then every blob the chain names is checked against its CID (the genesis model, each
round's updates, each global model). With an opening key every update is opened and
judged as the validators judge it (`fl_chain.protocol.open_update`): a valid update
excluded is a censored one, an invalid one included is a poisoned round, and the round is
re-aggregated to the byte; a dissent on an accepted round is judged the same way. Without
a key, what only a key can settle is said loudly, naming who holds one.

The run's own files are evidence, never trusted: summary.json's models must be the chain's,
its figures (accuracy, loss, ...) must follow from the participants' signed evaluations
(evaluations.jsonl), and what rests on nobody's signature is reported as unverified.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from fl_chain.aggregation import WeightedUpdate
from fl_chain.chain.artifacts import FEDERATION, deployed_code_matches
from fl_chain.chain.committee import committee_seed, draw_committee
from fl_chain.chain.federation import (
    CommitmentRecord,
    ExclusionReason,
    FederationParameters,
    Role,
    parameter_differences,
    parameters_for,
)
from fl_chain.chain.history import Event, read_history
from fl_chain.chain.ledger import bitmap_indices
from fl_chain.codec import MAX_MODEL_BYTES, decode_model
from fl_chain.envelope import is_usable_recipient
from fl_chain.errors import FlChainError, printable
from fl_chain.identity import Identity
from fl_chain.jsonfiles import parse_json
from fl_chain.keyfile import OpeningKey
from fl_chain.messages import Evaluation, MalformedMessage, weighted_metrics
from fl_chain.outliers import Screening, screen
from fl_chain.protocol import (
    NO_RETRIES,
    Exclusion,
    Federation,
    UpdateRules,
    encode_global_model,
    open_update,
)
from fl_chain.rundir import read_run_config, read_run_file
from fl_chain.runlog import EVALUATIONS_FILE, LEADING, ROUND_FIELDS, SUMMARY_FIELDS, TRAILING
from fl_chain.storage import dag
from fl_chain.storage.cid import Cid
from fl_chain.storage.unixfs import cid_of
from fl_chain.verify.findings import Findings

EXCLUSION_CHECK = "exclusion justified"
MAX_RUN_FILE = 256 << 20  # summary.json, evaluations.jsonl, metrics.csv of even a very long run
WHO_ACTED = "who acted"
_LATE = "it may have arrived after the aggregator gave up fetching it"


@dataclass
class CommitmentLine:
    participant: str
    examples: int
    cid: Cid
    block_number: int
    transaction: str
    included: bool = False
    exclusion: ExclusionReason | None = None

    def record(self, round_number: int) -> CommitmentRecord:
        return CommitmentRecord(self.participant, round_number, self.cid, self.examples, self.block_number,
                                self.transaction)


@dataclass
class RoundLineage:
    """What built one attempt of a round: the base, the updates, the result, the attestations."""

    round: int
    attempt: int
    base: Cid
    deadline: int
    opened_block: int
    recipients: list[str] = field(default_factory=list)  # who could open its updates: aggregator, validators
    recipient_keys: frozenset[bytes] = frozenset()  # their X25519 keys, as the chain stood at opening
    eligible: list[str] = field(default_factory=list)  # the validators frozen at opening, in list order
    commitments: list[CommitmentLine] = field(default_factory=list)
    excluded: list[tuple[str, ExclusionReason]] = field(default_factory=list)  # Excluded events of this attempt
    global_model: Cid | None = None
    committee: list[str] = field(default_factory=list)
    attestations: list[tuple[str, Cid, bool]] = field(default_factory=list)
    accepted: bool = False
    failed: bool = False
    failed_attempts: int = 0
    earlier: list[RoundLineage] = field(default_factory=list)  # this round's failed attempts, oldest first

    @property
    def dissents(self) -> list[tuple[str, Cid]]:
        return [(validator, cid) for validator, cid, agrees in self.attestations if not agrees]


@dataclass
class Audit:
    findings: Findings
    rounds: dict[int, RoundLineage]
    federation: str
    chain_id: int
    genesis: Cid | None
    opened_with: list[str]


@dataclass
class _MemberState:
    index: int
    roles: Role
    active: bool
    since: int
    cap: int
    x25519: bytes


def _cid(digest: bytes, codec: int) -> Cid:
    return Cid(codec, bytes(digest))


class _Walk:
    """Replays the event log, judging each event by the state before it."""

    def __init__(self, federation: Federation, findings: Findings) -> None:
        self.federation = federation
        self.findings = findings
        self.parameters = federation.ledger.parameters()
        self.members: dict[str, _MemberState] = {}
        self.by_index: dict[int, str] = {}
        self.validator_list: list[str] = []
        self.aggregator: str | None = None
        self.accepted: Cid | None = None
        self.genesis: Cid | None = None
        self.rounds: dict[int, RoundLineage] = {}

    def run(self, events: list[Event]) -> None:
        for event in events:
            handler = getattr(self, f"_on_{event.name}", None)
            if handler is not None:
                handler(event)

    def _at_least(self, check: str, count: int, minimum: int, what: str, **where: object) -> None:
        if count >= minimum:
            self.findings.passed(check, **where)
        else:
            self.findings.failed(check, f"{count} {what}, fewer than {minimum}", expected=f">= {minimum}",
                                 found=str(count), **where)

    def _on_FederationCreated(self, event: Event) -> None:  # noqa: N802 - named after the event
        self.genesis = self.accepted = _cid(event.args["genesisDigest"], event.args["genesisCodec"])
        self.findings.expect("parameters as created", self.parameters,
                             FederationParameters.from_abi(event.args["parameters"]),
                             "the contract's parameters vs its creation event")

    def _on_MemberAdded(self, event: Event) -> None:  # noqa: N802
        member = event.args["member"]
        roles = Role(event.args["roles"])
        self.members[member] = _MemberState(event.args["index"], roles, True, event.block_number,
                                            event.args["exampleCap"], bytes(event.args["x25519"]))
        self.by_index[event.args["index"]] = member
        if Role.VALIDATOR in roles and member not in self.validator_list:
            self.validator_list.append(member)

    def _on_MemberRemoved(self, event: Event) -> None:  # noqa: N802
        if event.args["member"] in self.members:
            self.members[event.args["member"]].active = False

    def _on_AggregatorChanged(self, event: Event) -> None:  # noqa: N802
        self.aggregator = event.args["next"]

    def _on_RoundOpened(self, event: Event) -> None:  # noqa: N802
        number = event.args["round"]
        base = _cid(event.args["baseDigest"], event.args["baseCodec"])
        previous = self.rounds.get(number)
        recipients = self._recipients(event.block_number)
        lineage = RoundLineage(number, event.args["attempt"], base, event.args["deadline"], event.block_number,
                               recipients=recipients,
                               recipient_keys=frozenset(k for k in (self.members[a].x25519 for a in recipients)
                                                        if is_usable_recipient(k)),
                               eligible=[v for v in self.validator_list if self._eligible(v, event.block_number)])
        if previous is not None:
            lineage.earlier = [*previous.earlier, previous]
            lineage.failed_attempts = len(lineage.earlier)
        self.rounds[number] = lineage
        self.findings.expect("opened on the accepted model", str(self.accepted), str(base),
                             "the round must start from the latest accepted model", round=number)

    def _recipients(self, opened_block: int) -> list[str]:
        eligible = [address for address in self.validator_list if self._eligible(address, opened_block)]
        return [*([self.aggregator] if self.aggregator else []), *eligible]

    def _eligible(self, address: str, opened_block: int) -> bool:
        member = self.members.get(address)
        return (member is not None and member.active and Role.VALIDATOR in member.roles
                and member.since < opened_block and address != self.aggregator)

    def _on_RoundFailed(self, event: Event) -> None:  # noqa: N802
        lineage = self.rounds[event.args["round"]]
        lineage.failed = True
        if lineage.global_model is None and lineage.excluded:  # failed by a finalize below the quorum
            excluded = {participant for participant, _ in lineage.excluded}
            self._account(lineage, {line.participant for line in lineage.commitments} - excluded)

    def _on_Committed(self, event: Event) -> None:  # noqa: N802
        number, participant = event.args["round"], event.args["participant"]
        lineage = self.rounds[number]
        where = {"round": number, "participant": participant}
        member = self.members.get(participant)
        if member is not None and member.active and Role.PARTICIPANT in member.roles:
            self.findings.passed("member", **where)
        else:
            self.findings.failed("member", f"not a member with the participant role at block {event.block_number}",
                                 **where)
        if member is not None and event.args["examples"] > member.cap:
            self.findings.failed("within its example cap", f"claims {event.args['examples']} examples, its cap is "
                                 f"{member.cap}", **where)
        elif member is not None:
            self.findings.passed("within its example cap", **where)
        if event.timestamp <= lineage.deadline:
            self.findings.passed("before deadline", **where)
        else:
            self.findings.failed("before deadline", f"committed at {event.timestamp}, deadline {lineage.deadline}",
                                 **where)
        if any(line.participant == participant for line in lineage.commitments):
            self.findings.failed("once", f"committed twice in attempt {lineage.attempt}", **where)
        else:
            self.findings.passed("once", **where)
        lineage.commitments.append(CommitmentLine(participant, event.args["examples"],
                                                  _cid(event.args["digest"], event.args["codec"]), event.block_number,
                                                  event.transaction))

    def _on_Excluded(self, event: Event) -> None:  # noqa: N802
        number, participant = event.args["round"], event.args["participant"]
        lineage = self.rounds[number]
        if lineage.global_model is not None:
            self.findings.failed("commitments accounted for",
                                 f"{participant} excluded after attempt {lineage.attempt} was finalized",
                                 round=number, participant=participant)
            return
        lineage.excluded.append((participant, ExclusionReason(event.args["reason"])))

    def _on_Finalized(self, event: Event) -> None:  # noqa: N802
        number = event.args["round"]
        lineage = self.rounds[number]
        lineage.global_model = _cid(event.args["digest"], event.args["codec"])
        included = {self.by_index[i] for i in bitmap_indices(event.args["included"]) if i in self.by_index}
        self._account(lineage, included)
        self._at_least("quorum", len(included), self.parameters.quorum, "included updates", round=number)
        self._check_committee(lineage, [to_checksum_address(a) for a in event.args["committee"]])

    def _account(self, lineage: RoundLineage, included: set[str]) -> None:
        """Every commitment is included or excluded with a reason, never both, never
        neither, and the late ones come after every other: an aggregator cannot drop an
        update silently, nor call one late that it had read."""
        committed = {line.participant: line for line in lineage.commitments}
        for line in lineage.commitments:
            line.included = line.participant in included
        problems, seen = [], set()
        stray = sorted(included - committed.keys())
        if stray:
            problems.append(f"included without a commitment: {', '.join(stray)}")
        for participant, reason in lineage.excluded:
            if participant in seen:
                problems.append(f"{participant} excluded twice")
            elif participant not in committed:
                problems.append(f"{participant} excluded without a commitment")
            elif participant in included:
                problems.append(f"{participant} both included and excluded")
            elif reason == ExclusionReason.NONE:
                problems.append(f"{participant} excluded without a reason")
            else:
                committed[participant].exclusion = reason
            seen.add(participant)
        silent = [p for p, line in committed.items() if p not in included and line.exclusion is None]
        if silent:
            problems.append(f"committed but neither included nor excluded: {', '.join(silent)}")
        positions = {line.participant: i for i, line in enumerate(lineage.commitments)}
        late = [p for p, reason in lineage.excluded if reason == ExclusionReason.LATE and p in positions]
        read = [p for p in positions if p not in late]
        early = [p for p in late if read and positions[p] < max(positions[q] for q in read)]
        if early:
            problems.append(f"excluded as late although committed before updates the aggregator read: "
                            f"{', '.join(early)}")
        if problems:
            excluded = sum(line.exclusion is not None for line in committed.values())
            self.findings.failed("commitments accounted for", "; ".join(problems), round=lineage.round,
                                 expected=f"{len(committed)} commitments = included + excluded",
                                 found=f"{len(included & committed.keys())} included + {excluded} excluded")
        else:
            self.findings.passed("commitments accounted for", round=lineage.round)

    def _check_committee(self, lineage: RoundLineage, announced: list[str]) -> None:
        log = _commitment_log(lineage.commitments)
        seed = committee_seed(self.federation.chain_id, self.federation.address, lineage.round, lineage.attempt, log)
        size = self.parameters.committee_size
        lineage.committee = draw_committee(seed, lineage.eligible, size)
        if size == 0:
            self.findings.passed("committee drawn by the rule", round=lineage.round)
        else:
            self.findings.expect("committee drawn by the rule", lineage.committee, announced,
                                 "the committee of the Finalized event vs the contract's rule", round=lineage.round)

    def _on_Attested(self, event: Event) -> None:  # noqa: N802
        number, validator = event.args["round"], event.args["validator"]
        cid = _cid(event.args["digest"], event.args["codec"])
        lineage = self.rounds[number]
        agrees = cid == lineage.global_model
        lineage.attestations.append((validator, cid, agrees))
        if validator in lineage.committee:
            self.findings.passed("attester is on the committee", round=number, participant=validator)
        else:
            self.findings.failed("attester is on the committee", f"not on the committee drawn for attempt "
                                 f"{lineage.attempt} (block {event.block_number})", round=number, participant=validator)

    def _on_Accepted(self, event: Event) -> None:  # noqa: N802
        number = event.args["round"]
        lineage = self.rounds[number]
        cid = _cid(event.args["digest"], event.args["codec"])
        agreeing = len({v for v, attested, agrees in lineage.attestations if agrees and v in lineage.committee})
        self._at_least("attestations reached the threshold", agreeing, self.parameters.attestation_threshold,
                       f"committee validators attesting {cid}", round=number)
        if lineage.dissents:
            self.findings.failed("no dissent before acceptance", f"accepted although {lineage.dissents[0][0]} "
                                 "dissented first", round=number)
        self.findings.expect("accepted the finalized model", str(lineage.global_model), str(cid),
                             "the accepted model must be the finalized one", round=number)
        lineage.accepted = True
        self.accepted = cid


def _commitment_log(lines: Iterable[CommitmentLine]) -> bytes:
    log = b"\x00" * 32
    for line in lines:
        log = keccak(encode(["bytes32", "address", "bytes32", "uint32", "uint64"],
                            [log, line.participant, line.cid.digest, line.cid.codec, line.examples]))
    return log


def audit(federation: Federation, keys: list[OpeningKey], run_dir: Path | None = None, replayed: bool = True) -> Audit:
    """Runs every check; never raises for what it finds, only records it. `replayed` says
    the chain was rebuilt from the run directory's records (not a live node's)."""
    findings = Findings()
    _HEADS.set({})
    ledger = federation.ledger
    code = bytes(ledger.chain.web3.eth.get_code(ledger.address))
    if deployed_code_matches(FEDERATION, code):
        findings.passed("contract code is the shipped artifact")
    else:
        findings.failed("contract code is the shipped artifact",
                        f"the code at {ledger.address} differs from Federation {FEDERATION.sha256[:12]}")
    walk = _Walk(federation, findings)
    walk.run(read_history(ledger))
    _check_genesis(federation, walk.genesis, findings)
    for lineage in walk.rounds.values():
        state = ledger.round(lineage.round)
        findings.expect("commitment events complete", "0x" + state.commitment_log.hex(),
                        "0x" + _commitment_log(lineage.commitments).hex(),
                        "the Committed events must hash to the contract's commitment log", round=lineage.round)
        for attempt in [*lineage.earlier, lineage]:
            _check_attempt(federation, attempt, keys, findings)
    result = Audit(findings, walk.rounds, ledger.address, ledger.chain.chain_id, walk.genesis,
                   [key.owner for key in keys])
    if run_dir is not None:
        RunFiles(federation, result, walk, run_dir, replayed).check()
    return result


# ---------------------------------------------------------------- blobs and updates


def _check_genesis(federation: Federation, genesis: Cid | None, findings: Findings) -> None:
    """Round 1's base is a blob like any other: it must be in the store, intact, a model."""
    if genesis is None:
        findings.failed("genesis model stored", "the chain has no FederationCreated event")
        return
    try:
        tensors, metadata = decode_model(federation.store.get(genesis, max_size=MAX_MODEL_BYTES))
    except FlChainError as error:
        findings.failed("genesis model stored", f"{genesis}: {error}")
        return
    if metadata.get("fl-chain.kind") != "genesis-model" or not tensors:
        findings.failed("genesis model stored", f"{genesis} is intact but is not an fl-chain genesis model")
    else:
        findings.passed("genesis model stored")


def _check_attempt(federation: Federation, lineage: RoundLineage, given: list[OpeningKey], findings: Findings) -> None:
    """Its blobs, its exclusions (re-judged with a key of one of its recipients) and, once
    finalized, its global model, its re-aggregation and its dissents."""
    number = lineage.round
    base = _base_rules(federation, lineage, findings)
    cap = base.max_blob if base is not None else UNKNOWN_BASE_CAP
    keys = [key for key in given if key.public_key in lineage.recipient_keys]
    if given and not keys:
        findings.unchecked("keys given open this round", f"none of the keys given was a recipient of round {number} "
                           f"attempt {lineage.attempt} ({_who_could(lineage)})", round=number)
    for line in lineage.commitments:
        if line.exclusion is None:
            _check_blob(federation, number, line, cap, findings)
        elif not keys or base is None:
            why = "the round's base model cannot be loaded" if keys else _who_could(lineage)
            _check_exclusion_publicly(federation, number, line, why, cap, findings)
        else:
            _check_exclusion(federation, lineage, line, keys, base, findings)
    if lineage.global_model is None or lineage.failed and not lineage.attestations:
        for line in lineage.commitments:
            if keys and line.exclusion == ExclusionReason.OUTLIER:
                findings.unchecked(EXCLUSION_CHECK, "excluded as an outlier in an attempt that failed before its "
                                   "model was attested: nothing was aggregated to test it against", round=number,
                                   participant=line.participant)
        return
    _check_global_model(federation, lineage, cap, findings)
    if not keys:
        findings.unchecked("re-aggregation", f"updates cannot be opened without a key ({_who_could(lineage)})",
                           round=number)
        if lineage.accepted and lineage.dissents:
            findings.failed("dissents judged", f"an accepted round has a dissent from {lineage.dissents[0][0]}; "
                            f"only a key can settle who is right ({_who_could(lineage)})", round=number)
        return
    if base is not None:
        _reaggregate(federation, lineage, keys, base, findings)


def _who_could(lineage: RoundLineage) -> str:
    holders = ", ".join(lineage.recipients) or "nobody on record"
    return f"only the aggregator and the validators of the round can open its updates: {holders}"


def _base_rules(federation: Federation, lineage: RoundLineage, findings: Findings) -> UpdateRules | None:
    try:
        base = decode_model(federation.store.get(lineage.base, max_size=MAX_MODEL_BYTES))[0]
        return UpdateRules.of(base, federation.ledger.parameters().update_norm_bound, lineage.recipient_keys)
    except FlChainError as error:
        findings.failed("base model stored", f"the base model {lineage.base} cannot be loaded: {error}",
                        round=lineage.round)
        return None


def _check_global_model(federation: Federation, lineage: RoundLineage, cap: int, findings: Findings) -> None:
    number = lineage.round
    try:
        _, metadata = decode_model(federation.store.get(lineage.global_model, max_size=cap))  # type: ignore[arg-type]
    except FlChainError as error:
        findings.failed("global model stored", str(error), round=number)
        return
    said = (metadata.get("fl-chain.federation"), metadata.get("fl-chain.chain-id"), metadata.get("fl-chain.round"))
    findings.expect("global model stored", (federation.address, str(federation.chain_id), str(number)), said,
                    "the global model's header must name this federation, chain and round", round=number)


HEAD_BYTES = 64 << 10  # an envelope's clear header is within its first bytes
UNKNOWN_BASE_CAP = 64 << 20  # what a blob may declare when the round's base model cannot be read


def _blob_head(federation: Federation, cid: Cid, cap: int) -> bytes:
    """The first bytes of a blob, after every block of it is fetched and checked against its
    CID (streamed: a blob that declares a gigabyte never sits in memory); each CID once."""
    heads = _HEADS.get()
    if (cid, cap) not in heads:
        head = bytearray()
        try:
            for piece in dag.file_content(federation.store.get_block, cid, cap):  # type: ignore[attr-defined]
                if len(head) < HEAD_BYTES:
                    head += piece[: HEAD_BYTES - len(head)]
            heads[(cid, cap)] = bytes(head)
        except FlChainError as error:
            heads[(cid, cap)] = error
    found = heads[(cid, cap)]
    if isinstance(found, FlChainError):
        raise found
    return found


# what one audit has read of each blob (set for each call of `audit`)
_HEADS: ContextVar[dict[tuple[Cid, int], bytes | FlChainError]] = ContextVar("blob heads")


def _check_blob(federation: Federation, number: int, line: CommitmentLine, cap: int, findings: Findings) -> None:
    where = {"round": number, "participant": line.participant}
    try:
        blob = _blob_head(federation, line.cid, cap)
    except FlChainError as error:
        findings.failed("blob matches its CID", str(error), **where)
        return
    findings.passed("blob matches its CID", **where)
    try:
        expected, found = _header_against_commitment(federation, number, line, blob)
    except FlChainError as error:
        findings.failed("header matches commitment", f"unreadable header: {error}", **where)
        return
    findings.expect("header matches commitment", expected, found,
                    "(federation, chain, round, sender, examples) of the blob vs its commitment", **where)


def _header_against_commitment(federation: Federation, number: int, line: CommitmentLine,
                               blob: bytes) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """(federation, chain, round, sender, examples) as committed, and as the clear header says."""
    header = federation.privacy.read_header(blob)
    expected = (federation.address, federation.chain_id, number, line.participant, line.examples)
    return expected, (header.federation, header.chain_id, header.round, header.sender, header.examples)


def _judge(federation: Federation, keys: list[OpeningKey], line: CommitmentLine, number: int,
           rules: UpdateRules) -> tuple[WeightedUpdate | None, Exclusion | None, str | None]:
    """The update, or the first key's verdict against it, and whose key opened it."""
    failure = None
    for key in keys:
        outcome = open_update(federation, key.private_key, line.record(number), rules, NO_RETRIES)
        if not isinstance(outcome, Exclusion):
            return outcome, None, key.owner
        failure = failure or outcome
    return None, failure, None


def _check_exclusion(federation: Federation, lineage: RoundLineage, line: CommitmentLine, keys: list[OpeningKey],
                     rules: UpdateRules, findings: Findings) -> None:
    """Re-judges an exclusion recorded on chain by opening the update as a validator does:
    an update that opens and is within the rules was censored, whatever reason was given."""
    claimed = line.exclusion
    assert claimed is not None
    number = lineage.round
    where = {"round": number, "participant": line.participant}
    update, failure, owner = _judge(federation, keys, line, number, rules)
    if update is not None and claimed == ExclusionReason.UNAVAILABLE:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, but the blob is in the store now and opens "
                                            f"as a valid update: {_LATE}", **where)
    elif claimed == ExclusionReason.LATE:
        _late_exclusion(line, findings, **where)
    elif update is not None and claimed == ExclusionReason.OUTLIER:
        return  # a valid update: whether it is an outlier is the re-aggregation's outlier test to say
    elif update is not None:
        findings.failed(EXCLUSION_CHECK, f"the aggregator excluded a valid update of {line.participant} as "
                                         f"{claimed.label}: it opens and is within the rules with {owner}'s key",
                        expected=claimed.label, found="a valid update", **where)
    elif failure is not None and claimed == failure.code and claimed != ExclusionReason.UNAVAILABLE:
        findings.passed(EXCLUSION_CHECK, **where)
    elif claimed == ExclusionReason.UNAVAILABLE:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, but the blob is in the store now ({_LATE}); "
                                            f"it would have been excluded anyway: {failure.reason if failure else ''}",
                           **where)
    elif failure is not None and failure.code in (ExclusionReason.UNAVAILABLE, ExclusionReason.UNDECRYPTABLE):
        findings.unchecked(EXCLUSION_CHECK, f"excluded as {claimed.label}, which these keys cannot check: "
                                            f"{failure.reason}", **where)
    else:
        findings.failed(EXCLUSION_CHECK, f"the aggregator recorded {claimed.label}, but the update fails otherwise: "
                                         f"{failure.reason if failure else ''}", expected=claimed.label,
                        found=failure.code.label if failure and failure.code else "", **where)


def _check_exclusion_publicly(federation: Federation, number: int, line: CommitmentLine, why: str, cap: int,
                              findings: Findings) -> None:
    """What can be checked of an exclusion without opening the update: that the blob is
    missing, or that its clear header disagrees with the commitment. Anything else only a
    key can settle, and the finding says whose."""
    claimed = line.exclusion
    assert claimed is not None
    where = {"round": number, "participant": line.participant}
    if claimed == ExclusionReason.LATE:
        _late_exclusion(line, findings, **where)
        return
    try:
        blob = _blob_head(federation, line.cid, cap)
    except FlChainError as error:
        if claimed == ExclusionReason.UNAVAILABLE:  # missing now proves nothing of then: a blob can be withheld
            findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, and the blob is not in this store either: "
                                                f"whether it was available when the aggregator fetched it cannot be "
                                                f"judged after the fact ({error})", **where)
        else:
            findings.unchecked(EXCLUSION_CHECK, f"excluded as {claimed.label}, but the blob is not in the store "
                                                f"now, so that cannot be checked: {error}", **where)
        return
    if claimed == ExclusionReason.UNAVAILABLE:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, but the blob is in the store now: {_LATE}",
                           **where)
        return
    if claimed == ExclusionReason.WRONG_HEADER:
        try:
            expected, found = _header_against_commitment(federation, number, line, blob)
        except FlChainError:
            expected = found = ()  # an unreadable header is no wrong header: only opening says what it is
        if expected != found:
            findings.passed(EXCLUSION_CHECK, **where)
            return
    findings.unchecked(EXCLUSION_CHECK, f"NOT RE-JUDGED: excluded as {claimed.label}, which only opening the "
                                        f"update can confirm; {why}", **where)


def _late_exclusion(line: CommitmentLine, findings: Findings, **where: object) -> None:
    """The contract lets only a member's own commitment after the commit grace be late, and
    the event log proves it came after every commitment the aggregator read; when the
    aggregator asked the participant to train, nothing on chain says."""
    findings.unchecked(EXCLUSION_CHECK, f"excluded as late: it came after the commit grace and after every "
                                        f"commitment the aggregator read (block {line.block_number}); whether the "
                                        "aggregator asked its participant in time is not on chain", **where)


def _reaggregate(federation: Federation, lineage: RoundLineage, keys: list[OpeningKey], rules: UpdateRules,
                 findings: Findings) -> None:
    """The aggregate of what should have been included (the included updates that are
    valid, plus excluded ones that are valid and not excluded as unavailable or late) must
    be the finalized model; a dissent on an accepted round is settled by the same."""
    number = lineage.round
    valid: list[WeightedUpdate] = []
    for line in lineage.commitments:
        update, failure, _ = _judge(federation, keys, line, number, rules)
        if line.included:
            if update is None:
                findings.failed("update opens", failure.reason if failure else "", round=number,
                                participant=line.participant)
                continue
            findings.passed("update opens", round=number, participant=line.participant)
            valid.append(update)
        elif update is not None and line.exclusion not in (ExclusionReason.UNAVAILABLE, ExclusionReason.LATE):
            valid.append(update)
    quorum = federation.ledger.parameters().quorum
    if len(valid) < quorum:
        findings.failed("re-aggregation", f"only {len(valid)} of the updates that should be in are valid, "
                                          "below the quorum: the attempt should have failed", round=number)
        return
    try:
        rule = federation.rule
        screening = screen(valid, rules.base, rule.outliers, quorum)
        recomputed = cid_of(encode_global_model(federation, number, federation.privacy.combine(rule, screening.kept,
                                                                                               rules.base)))
    except FlChainError as unusable:  # a rule this fl-chain does not know, or cannot apply to these updates
        findings.failed("re-aggregation", str(unusable), round=number)
        return
    _check_outliers(lineage, screening, findings)
    matches = findings.expect("re-aggregation", str(lineage.global_model), str(recomputed),
                              f"{rule.description} (rule {rule.code}, as the federation records)", round=number)
    for validator, cid in lineage.dissents:
        if matches:
            findings.passed("dissents judged", round=number, participant=validator,
                            detail=f"its dissent ({cid}) is unfounded: the re-aggregation gives the finalized model")
        else:
            findings.failed("dissents judged", f"{validator} dissented rightly: the finalized model is not the "
                            "aggregate of the valid updates", round=number, participant=validator)


def _check_outliers(lineage: RoundLineage, screening: Screening, findings: Findings) -> None:
    """The federation's outlier test, re-run on the round's valid updates, must flag
    exactly the updates excluded as outliers, and none of the included ones."""
    scores = {score.participant: score for score in screening.scores}
    flagged = {update.sender for update in screening.outliers}
    kept = {update.sender for update in screening.kept}
    for line in lineage.commitments:
        where = {"round": lineage.round, "participant": line.participant}
        score = scores.get(line.participant)
        if line.participant not in flagged | kept:
            continue  # not a valid update: its own exclusion check has judged it
        if line.exclusion == ExclusionReason.OUTLIER:
            measured = (f"{score.distance:.4g} from the round's median update, the test's threshold "
                        f"{screening.threshold:.4g}") if score else "the federation records no outlier test"
            findings.expect(EXCLUSION_CHECK, "an outlier", "an outlier" if line.participant in flagged
                            else "within the test", measured, **where)
        elif line.included and score is not None and score.outlier:
            findings.failed("outliers excluded", f"the update of {line.participant} is included but the federation's "
                            f"outlier test flags it: {score.describe(screening.threshold)}", **where)


# ---------------------------------------------------------------- the run's own files


def _claimed_outliers(summary: Any) -> tuple[dict[str, list[int]] | None, dict[int, list[str]] | None]:
    """summary.json's outliers, top-level and per accepted round, in lower case; None for
    either when it is malformed (not a map, not round numbers, a participant named twice)."""
    if not isinstance(summary, dict):
        return None, None
    top = summary.get("outliers", {})
    claimed: dict[str, list[int]] | None = {}
    if not isinstance(top, dict) or not all(isinstance(who, str) and isinstance(rounds, list)
                                            and all(type(n) is int for n in rounds) for who, rounds in top.items()):
        claimed = None
    else:
        claimed = {who.lower(): rounds for who, rounds in top.items()}
        if len(claimed) != len(top):
            claimed = None
    per_round: dict[int, list[str]] | None = {}
    rounds = summary.get("rounds")
    for entry in rounds if isinstance(rounds, list) else []:
        if not (isinstance(entry, dict) and entry.get("accepted")):
            continue
        listed = entry.get("outliers", [])
        if type(entry.get("round")) is not int or not isinstance(listed, list) or not all(
                isinstance(who, str) for who in listed):
            per_round = None
            break
        if listed:
            per_round[entry["round"]] = sorted(who.lower() for who in listed)
    return claimed, per_round


class RunFiles:
    """Checks the files a run directory holds against the chain: each malformed file is
    one finding, never a crash."""

    def __init__(self, federation: Federation, result: Audit, walk: _Walk, run_dir: Path, replayed: bool) -> None:
        self.federation, self.result, self.walk, self.run_dir = federation, result, walk, run_dir
        self.replayed = replayed
        self.findings = result.findings
        self.accepted = [lineage for lineage in sorted(walk.rounds.values(), key=lambda r: r.round)
                         if lineage.accepted]

    def check(self) -> None:
        self._final_model()
        summary = self._json("summary.json")
        if summary is not None:
            self._summary_models(summary)
            self._summary_outliers(summary)
        evaluations = self._evaluations()
        if summary is not None and evaluations is not None:
            self._summary_metrics(summary, evaluations)
        if evaluations is not None:
            self._metrics_csv(evaluations)
        config = self._config()
        if config is not None:
            self._parameters(config)
            self._who_acted(config)

    def _read(self, name: str, limit: int) -> bytes | None:
        """A file of the run directory, if it is there as a regular file of at most `limit`
        bytes; anything else is a finding."""
        path = self.run_dir / name
        if not os.path.lexists(path):
            return None
        try:
            return read_run_file(path, limit)
        except (FlChainError, OSError) as error:
            self.findings.failed(f"{name} readable", str(error))
            return None

    def _final_model(self) -> None:
        data = self._read("model.safetensors", MAX_MODEL_BYTES)
        if self.accepted and data is not None:
            self.findings.expect("final model file", str(self.accepted[-1].global_model), str(cid_of(data)),
                                 "model.safetensors must be the last accepted model")
        elif self.accepted:
            self.findings.failed("final model file", f"{self.run_dir / 'model.safetensors'} is missing or unreadable")

    def _json(self, name: str) -> Any:
        data = self._read(name, MAX_RUN_FILE)
        if data is None:
            return None
        try:
            return parse_json(data)
        except ValueError as error:
            self.findings.failed(f"{name} readable", f"{name} is not readable JSON: {error}")
            return None

    def _summary_models(self, summary: Any) -> None:
        on_chain = [(lineage.round, str(lineage.global_model), len(lineage.commitments),
                     sum(line.included for line in lineage.commitments)) for lineage in self.accepted]
        try:
            claimed = [(r["round"], r["global_cid"], r["commitments"], r["included"]) for r in summary["rounds"]
                       if r.get("accepted")]
        except (KeyError, TypeError, AttributeError) as error:
            self.findings.failed("summary matches the chain", f"summary.json does not list its rounds: {error!r}")
            return
        final = summary.get("final") if isinstance(summary, dict) else None
        claimed_final = (final.get("round"), final.get("global_cid")) if isinstance(final, dict) else None
        last = (on_chain[-1][0], on_chain[-1][1]) if on_chain else None
        self.findings.expect("summary matches the chain", [*on_chain, last], [*claimed, claimed_final],
                             "summary.json's accepted rounds, models, commitments and included updates, and its "
                             "final round and model, vs the chain's")
        self.findings.unchecked("unverified figures", "the reasons summary.json and metrics.csv give for exclusions "
                                                      "are the aggregator's words; the chain's Excluded events (in "
                                                      "the round tables above) are what counts")

    def _summary_outliers(self, summary: Any) -> None:
        """Who summary.json says the outlier test excluded, and in which rounds (the
        top-level map and each round's list), must be what the chain's Excluded events
        say: a publisher cannot name an honest member."""
        on_chain: dict[str, list[int]] = {}
        by_round: dict[int, list[str]] = {}
        for lineage in self.accepted:
            for line in lineage.commitments:
                if line.exclusion == ExclusionReason.OUTLIER:
                    on_chain.setdefault(line.participant.lower(), []).append(lineage.round)
                    by_round.setdefault(lineage.round, []).append(line.participant.lower())
        claimed, claimed_rounds = _claimed_outliers(summary)
        if claimed is None or claimed_rounds is None:
            self.findings.failed("summary matches the chain", "summary.json's outliers are not a map of distinct "
                                 "participants to round numbers, with each round's a list of participants")
            return
        self.findings.expect("summary matches the chain", (on_chain, {n: sorted(w) for n, w in by_round.items()}),
                             (claimed, claimed_rounds),
                             "summary.json's outliers (who, which rounds; and each round's) vs the chain's Outlier "
                             "exclusions")

    def _evaluations(self) -> dict[int, list[Evaluation]] | None:
        """The signed evaluations of each accepted model, by round; anything unsigned, of
        another model, by a non-participant or repeated is a failure."""
        data = self._read(EVALUATIONS_FILE, MAX_RUN_FILE)
        if data is None:
            self.findings.unchecked("evaluations signed", f"{EVALUATIONS_FILE} is missing or unreadable: no figure "
                                                          "of the run's figures rests on a signature")
            return None
        models = {lineage.round: lineage.global_model for lineage in self.accepted}
        by_round: dict[int, dict[str, Evaluation]] = {}
        problems = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                evaluation = Evaluation.from_record(parse_json(line), federation=self.federation.address,
                                                    chain_id=self.federation.chain_id)
                member = self.walk.members.get(evaluation.participant)
                if member is None or Role.PARTICIPANT not in member.roles:
                    raise MalformedMessage(f"{evaluation.participant} is not a participant")
                if evaluation.examples > member.cap:
                    raise MalformedMessage(f"{evaluation.participant} claims {evaluation.examples} test examples, "
                                           f"above its cap of {member.cap}")
                if models.get(evaluation.round) != evaluation.model:
                    raise MalformedMessage(f"it evaluates {evaluation.model}, not round {evaluation.round}'s accepted "
                                           "model")
                earlier = by_round.setdefault(evaluation.round, {}).get(evaluation.participant)
                if earlier is not None and earlier != evaluation:
                    raise MalformedMessage(f"{evaluation.participant} evaluated round {evaluation.round} twice, "
                                           "differently")
                by_round[evaluation.round][evaluation.participant] = evaluation
            except (ValueError, MalformedMessage) as error:
                problems.append(f"line {number}: {error}")
        if problems:
            self.findings.failed("evaluations signed", "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
        else:
            self.findings.passed("evaluations signed")
        self._coverage(by_round)
        return {number: list(found.values()) for number, found in by_round.items()}

    def _coverage(self, by_round: dict[int, dict[str, Evaluation]]) -> None:
        """A figure over fewer participants than took part can be a chosen one: say whose
        evaluations are missing (a participant may also simply have failed to evaluate)."""
        missing = []
        for lineage in self.accepted:
            included = {line.participant for line in lineage.commitments if line.included}
            absent = sorted(included - set(by_round.get(lineage.round, {})))
            if absent:
                missing.append(f"round {lineage.round}: {len(included) - len(absent)} of the {len(included)} included "
                               f"participants evaluated (none from {', '.join(absent)})")
        if missing:
            self.findings.unchecked("evaluations cover the round", "; ".join(missing[:5]) + (
                " …" if len(missing) > 5 else "") + ": the round's figures leave them out")
        else:
            self.findings.passed("evaluations cover the round")

    def _summary_metrics(self, summary: Any, evaluations: dict[int, list[Evaluation]]) -> None:
        """Each round's figures in summary.json, and the final ones, must be the
        example-weighted means of the participants' signed evaluations, bit for bit, name
        by name: a figure nobody signed is a mismatch."""
        mismatches = []
        try:
            rounds = [r for r in summary["rounds"] if r.get("accepted")]
            for entry in rounds:
                recomputed = weighted_metrics(evaluations.get(entry["round"], []))
                claimed = entry["metrics"]
                extra = sorted(set(entry) - ROUND_FIELDS, key=str)
                if extra:
                    mismatches.append(f"round {entry['round']} carries {printable(', '.join(map(str, extra)), 80)}, "
                                      "which no run writes and nobody signed")
                for name in sorted(set(claimed) | set(recomputed), key=str):
                    if not _same(claimed.get(name), recomputed.get(name)):
                        mismatches.append(f"round {entry['round']} {printable(str(name), 64)}: summary "
                                          f"{printable(repr(claimed.get(name)), 64)}, signed evaluations "
                                          f"{recomputed.get(name)!r}")
            final = summary["final"]
            last = weighted_metrics(evaluations.get(rounds[-1]["round"], [])) if rounds else {}
            for name in sorted(set(final) - set(SUMMARY_FIELDS), key=str):
                if not _same(final[name], last.get(name)):
                    mismatches.append(f"final {printable(str(name), 64)}: summary {printable(repr(final[name]), 64)}, "
                                      f"signed evaluations {last.get(name)!r}")
        except (KeyError, TypeError, AttributeError, IndexError) as error:
            self.findings.failed("metrics rest on signed evaluations", f"summary.json is malformed: {error!r}")
            return
        if mismatches:
            self.findings.failed("metrics rest on signed evaluations", "; ".join(mismatches[:5]))
        else:
            self.findings.passed("metrics rest on signed evaluations")
        self.findings.unchecked("unverified figures", "the centralized baseline, seconds and gas in summary.json are "
                                                      "the aggregator's own measurements: nobody signed them")

    def _metrics_csv(self, evaluations: dict[int, list[Evaluation]]) -> None:
        data = self._read("metrics.csv", MAX_RUN_FILE)
        if data is None:
            return
        signed = {(number, e.participant): e for number, found in evaluations.items() for e in found}
        mismatches = []
        try:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
            header = reader.fieldnames or []
            if len(set(header)) != len(header):
                raise ValueError(f"its header repeats a column: {printable(','.join(header), 120)}")
            figures = [name for name in header if name not in LEADING + TRAILING]
            for row in reader:
                number = int(row["round"])
                if row["scope"] == "round":
                    expected = weighted_metrics(evaluations.get(number, []))
                elif (number, row["participant"]) in signed:
                    expected = signed[(number, row["participant"])].metrics
                else:
                    expected = {}
                for name in figures:
                    cell = row.get(name) or ""
                    if cell and not _same(float(cell), expected.get(name)):
                        mismatches.append(f"round {number} {printable(row['scope'], 16)} "
                                          f"{printable(row['participant'], 42)}: {printable(name, 64)} "
                                          f"{printable(cell, 32)}")
        except (OSError, KeyError, ValueError, csv.Error) as error:
            self.findings.failed("metrics.csv matches the signed evaluations", f"metrics.csv is malformed: {error!r}")
            return
        if mismatches:
            self.findings.failed("metrics.csv matches the signed evaluations", "; ".join(mismatches[:5]))
        else:
            self.findings.passed("metrics.csv matches the signed evaluations")
        self.findings.unchecked("unverified figures", "metrics.csv's training loss, bytes, gas and seconds are the "
                                                      "participants' and the aggregator's own words: unverified")

    def _config(self) -> dict[str, Any] | None:
        if not os.path.lexists(self.run_dir / "config.yaml"):
            return None
        try:
            return read_run_config(self.run_dir)
        except FlChainError as error:
            self.findings.failed("federation parameters are the run's", f"config.yaml cannot be read: {error}")
            return None

    def _parameters(self, config: dict[str, Any]) -> None:
        """Every parameter the contract enforces must be the one config.yaml states: a task
        hash alone would let a deployer loosen the norm bound or the example cap."""
        try:
            differences = parameter_differences(parameters_for(config), self.walk.parameters)
        except (KeyError, TypeError, ValueError, OverflowError, FlChainError) as error:
            self.findings.failed("federation parameters are the run's", f"config.yaml lacks or garbles {error!r}")
            return
        if differences:
            self.findings.failed("federation parameters are the run's", "; ".join(differences))
        else:
            self.findings.passed("federation parameters are the run's")

    def _who_acted(self, config: dict[str, Any]) -> None:
        """A chain re-executed from the run's own records proves which accounts signed what,
        not who held their keys: a run that started its chain itself held all of them (a
        simulation's come from its seed, which anyone may know)."""
        seed = config.get("seed")
        admin = self.federation.ledger.admin()
        derived = isinstance(seed, int) and not isinstance(seed, bool) and admin == Identity.derive(
            f"fl-chain simulation seed {seed}", "admin").address
        if derived:
            self.findings.unchecked(WHO_ACTED, f"every account of this run is derived from its seed ({seed}): anyone "
                                               "who knows the seed could sign as any member, so this proves what was "
                                               "computed, not who took part")
        elif self.replayed:
            self.findings.unchecked(WHO_ACTED, "this chain is re-executed from the run directory's own records: the "
                                               "signatures prove which accounts acted, not who held their keys (the "
                                               "run's publisher may have held every one)")
        else:
            self.findings.passed(WHO_ACTED)


def _same(left: object, right: object) -> bool:
    if left is None or right is None:
        return left is None and right is None
    try:
        return float(left) == float(right) or (math.isnan(float(left)) and math.isnan(float(right)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False

