"""The audit: every check `flchain verify` makes, from the chain, the store and the run files.

The chain's event log is walked in order, keeping the membership and the accepted model
as they were at each event, so each commitment is judged by the rules in force at its
block, and each finalized attempt must account for every commitment: included, or excluded
with a reason. Then every included blob is checked against its CID and its commitment, each
exclusion is re-judged (a valid update excluded is a censored one) and, with an opening
key, every included update is opened and the round re-aggregated to the byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import keccak

from fl_chain.aggregation import federated_average
from fl_chain.chain.artifacts import FEDERATION, deployed_code_matches
from fl_chain.chain.federation import CommitmentRecord, ExclusionReason, Role, task_hash
from fl_chain.chain.history import Event, read_history
from fl_chain.chain.ledger import bitmap_indices
from fl_chain.codec import schema_hash
from fl_chain.envelope import read_header
from fl_chain.errors import FlChainError
from fl_chain.keyfile import OpeningKey
from fl_chain.protocol import (
    NO_RETRIES,
    Exclusion,
    Federation,
    collect,
    encode_global_model,
    load_model,
    open_update,
)
from fl_chain.storage.cid import Cid
from fl_chain.storage.unixfs import cid_of
from fl_chain.verify.findings import Findings


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
    """What built one round's model: the base, the updates, the result, the attestations."""

    round: int
    attempt: int
    base: Cid
    deadline: int
    commitments: list[CommitmentLine] = field(default_factory=list)
    excluded: list[tuple[str, ExclusionReason]] = field(default_factory=list)  # Excluded events of this attempt
    global_model: Cid | None = None
    attestations: list[tuple[str, Cid, bool]] = field(default_factory=list)
    accepted: bool = False
    failed_attempts: int = 0


@dataclass
class Audit:
    findings: Findings
    rounds: dict[int, RoundLineage]
    federation: str
    chain_id: int
    genesis: Cid | None
    opened_with: list[str]


def _cid(digest: bytes, codec: int) -> Cid:
    return Cid(codec, bytes(digest))


class _Walk:
    """Replays the event log, judging each event by the state before it."""

    def __init__(self, federation: Federation, findings: Findings) -> None:
        self.federation = federation
        self.findings = findings
        self.parameters = federation.ledger.parameters()
        self.members: dict[str, Role] = {}
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

    def _on_MemberAdded(self, event: Event) -> None:  # noqa: N802
        self.members[event.args["member"]] = Role(event.args["roles"])

    def _on_MemberRemoved(self, event: Event) -> None:  # noqa: N802
        self.members.pop(event.args["member"], None)

    def _on_RoundOpened(self, event: Event) -> None:  # noqa: N802
        number = event.args["round"]
        base = _cid(event.args["baseDigest"], event.args["baseCodec"])
        previous = self.rounds.get(number)
        self.rounds[number] = RoundLineage(number, event.args["attempt"], base, event.args["deadline"],
                                           failed_attempts=previous.failed_attempts if previous else 0)
        self.findings.expect("opened on the accepted model", str(self.accepted), str(base),
                             "the round must start from the latest accepted model", round=number)

    def _on_RoundFailed(self, event: Event) -> None:  # noqa: N802
        self.rounds[event.args["round"]].failed_attempts += 1

    def _on_Committed(self, event: Event) -> None:  # noqa: N802
        number, participant = event.args["round"], event.args["participant"]
        lineage = self.rounds[number]
        where = {"round": number, "participant": participant}
        roles = self.members.get(participant)
        if roles is not None and Role.PARTICIPANT in roles:
            self.findings.passed("member", **where)
        else:
            self.findings.failed("member", f"not a member with the participant role at block {event.block_number}", **where)
        if event.timestamp <= lineage.deadline:
            self.findings.passed("before deadline", **where)
        else:
            self.findings.failed("before deadline", f"committed at {event.timestamp}, deadline {lineage.deadline}", **where)
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
        addresses = [member.address for member in self.federation.ledger.members()]
        included = {addresses[i] for i in bitmap_indices(event.args["included"]) if i < len(addresses)}
        committed = {line.participant for line in lineage.commitments}
        for line in lineage.commitments:
            line.included = line.participant in included
        stray = sorted(included - committed)
        if stray:
            self.findings.failed("included were committed", f"included without a commitment: {', '.join(stray)}",
                                 round=number)
        else:
            self.findings.passed("included were committed", round=number)
        self._at_least("quorum", len(included), self.parameters.quorum, "included updates", round=number)
        self._account(lineage, included)

    def _account(self, lineage: RoundLineage, included: set[str]) -> None:
        """Every commitment of a finalized attempt is included or excluded with a reason,
        never both, never neither: an aggregator cannot drop an update silently."""
        committed = {line.participant: line for line in lineage.commitments}
        problems, seen = [], set()
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
        if problems:
            excluded = sum(line.exclusion is not None for line in committed.values())
            self.findings.failed("commitments accounted for", "; ".join(problems), round=lineage.round,
                                 expected=f"{len(committed)} commitments = included + excluded",
                                 found=f"{len(included & committed.keys())} included + {excluded} excluded")
        else:
            self.findings.passed("commitments accounted for", round=lineage.round)

    def _on_Attested(self, event: Event) -> None:  # noqa: N802
        number, validator = event.args["round"], event.args["validator"]
        cid = _cid(event.args["digest"], event.args["codec"])
        lineage = self.rounds[number]
        agrees = cid == lineage.global_model
        lineage.attestations.append((validator, cid, agrees))
        roles = self.members.get(validator)
        if roles is not None and Role.VALIDATOR in roles:
            self.findings.passed("attester is a validator", round=number, participant=validator)
        else:
            self.findings.failed("attester is a validator", f"not a validator at block {event.block_number}",
                                 round=number, participant=validator)

    def _on_Accepted(self, event: Event) -> None:  # noqa: N802
        number = event.args["round"]
        lineage = self.rounds[number]
        cid = _cid(event.args["digest"], event.args["codec"])
        agreeing = len({v for v, attested, _ in lineage.attestations if attested == cid})
        self._at_least("attestations reached the threshold", agreeing, self.parameters.attestation_threshold,
                       f"validators attesting {cid}", round=number)
        self.findings.expect("accepted the finalized model", str(lineage.global_model), str(cid),
                             "the accepted model must be the finalized one", round=number)
        lineage.accepted = True
        self.accepted = cid


def audit(federation: Federation, keys: list[OpeningKey], run_dir: Path | None = None) -> Audit:
    """Runs every check; never raises for what it finds, only records it."""
    findings = Findings()
    ledger = federation.ledger
    code = bytes(ledger.chain.web3.eth.get_code(ledger.address))
    if deployed_code_matches(FEDERATION, code):
        findings.passed("contract code is the shipped artifact")
    else:
        findings.failed("contract code is the shipped artifact",
                        f"the code at {ledger.address} differs from Federation {FEDERATION.sha256[:12]}")
    walk = _Walk(federation, findings)
    walk.run(read_history(ledger))
    for lineage in walk.rounds.values():
        _check_round_data(federation, lineage, keys, findings)
    result = Audit(findings, walk.rounds, ledger.address, ledger.chain.chain_id, walk.genesis,
                   [key.owner for key in keys])
    if run_dir is not None:
        _check_run_files(federation, result, walk, run_dir)
    return result


def _check_round_data(federation: Federation, lineage: RoundLineage, keys: list[OpeningKey], findings: Findings) -> None:
    number = lineage.round
    state = federation.ledger.round(number)
    log = b"\x00" * 32
    for line in lineage.commitments:
        log = keccak(encode(["bytes32", "address", "bytes32", "uint32", "uint64"],
                            [log, line.participant, line.cid.digest, line.cid.codec, line.examples]))
    findings.expect("commitment events complete", "0x" + state.commitment_log.hex(), "0x" + log.hex(),
                    "the Committed events must hash to the contract's commitment log", round=number)
    base = _base_model(federation, lineage, findings) if keys and lineage.global_model is not None else None
    for line in lineage.commitments:
        if line.exclusion is None:
            _check_blob(federation, number, line, findings)
        elif base is None:
            why = "the round's base model cannot be loaded" if keys else "no opening key given (--key)"
            _check_exclusion_publicly(federation, number, line, why, findings)
        else:
            _check_exclusion(federation, number, line, keys, schema_hash(base), findings)
    if lineage.global_model is None:
        return
    try:
        federation.store.get(lineage.global_model)
        findings.passed("global model stored", round=number)
    except FlChainError as error:
        findings.failed("global model stored", str(error), round=number)
    if not keys:
        findings.unchecked("re-aggregation", "no opening key given (--key): updates cannot be opened", round=number)
        return
    if base is not None:
        _reaggregate(federation, lineage, keys, base, findings)


def _base_model(federation: Federation, lineage: RoundLineage, findings: Findings) -> dict[str, Any] | None:
    try:
        return load_model(federation.store, lineage.base)
    except FlChainError as error:
        findings.failed("re-aggregation", f"the base model {lineage.base} cannot be loaded: {error}",
                        round=lineage.round)
        return None


def _check_blob(federation: Federation, number: int, line: CommitmentLine, findings: Findings) -> None:
    where = {"round": number, "participant": line.participant}
    try:
        blob = federation.store.get(line.cid)
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
    header = read_header(blob)
    expected = (federation.address, federation.chain_id, number, line.participant, line.examples)
    return expected, (header.federation, header.chain_id, header.round, header.sender, header.examples)


EXCLUSION_CHECK = "exclusion justified"
_LATE = "it may have arrived after the aggregator gave up fetching it"


def _check_exclusion(federation: Federation, number: int, line: CommitmentLine, keys: list[OpeningKey],
                     schema: str, findings: Findings) -> None:
    """Re-judges an exclusion recorded on chain by opening the update as the aggregator did:
    an update that opens and is well-formed was censored, whatever reason was recorded."""
    claimed = line.exclusion
    assert claimed is not None
    where = {"round": number, "participant": line.participant}
    outcomes = [(key, open_update(federation, key.private_key, line.record(number), schema, NO_RETRIES))
                for key in keys]
    opened_by = [key.owner for key, outcome in outcomes if not isinstance(outcome, Exclusion)]
    failures = [outcome for _, outcome in outcomes if isinstance(outcome, Exclusion)]
    codes = {failure.code for failure in failures}
    if opened_by and claimed == ExclusionReason.UNAVAILABLE:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, but the blob is in the store now and opens "
                                            f"as a valid update: {_LATE}", **where)
    elif opened_by:
        findings.failed(EXCLUSION_CHECK, f"the aggregator excluded a valid update of {line.participant} as "
                                         f"{claimed.label}: it opens and is well-formed with {opened_by[0]}'s key",
                        expected=claimed.label, found="a valid update", **where)
    elif claimed in codes:
        findings.passed(EXCLUSION_CHECK, **where)
    elif claimed == ExclusionReason.UNAVAILABLE:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as unavailable, but the blob is in the store now ({_LATE}); "
                                            f"it would have been excluded anyway: {failures[0].reason}", **where)
    elif codes <= {ExclusionReason.UNAVAILABLE, ExclusionReason.UNDECRYPTABLE}:
        findings.unchecked(EXCLUSION_CHECK, f"excluded as {claimed.label}, which cannot be checked: "
                                            f"{failures[0].reason}", **where)
    else:
        failure = failures[0]
        findings.failed(EXCLUSION_CHECK, f"the aggregator recorded {claimed.label}, but the update fails otherwise: "
                                         f"{failure.reason}", expected=claimed.label,
                        found=failure.code.label if failure.code else "", **where)


def _check_exclusion_publicly(federation: Federation, number: int, line: CommitmentLine, why: str,
                              findings: Findings) -> None:
    """What can be checked of an exclusion without opening the update: that the blob is
    missing, or that its clear header disagrees with the commitment."""
    claimed = line.exclusion
    assert claimed is not None
    where = {"round": number, "participant": line.participant}
    try:
        blob = federation.store.get(line.cid)
    except FlChainError as error:
        if claimed == ExclusionReason.UNAVAILABLE:
            findings.passed(EXCLUSION_CHECK, **where)
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
    findings.unchecked(EXCLUSION_CHECK, f"excluded as {claimed.label}, which only opening the update can "
                                        f"confirm: {why}", **where)


def _reaggregate(federation: Federation, lineage: RoundLineage, keys: list[OpeningKey], base: dict[str, Any],
                 findings: Findings) -> None:
    number = lineage.round
    included = [line.participant for line in lineage.commitments if line.included]
    outcomes = [(key, collect(federation, key.private_key, number, base, included, retries=NO_RETRIES))
                for key in keys]
    key, collected = min(outcomes, key=lambda outcome: len(outcome[1].exclusions))
    for exclusion in collected.exclusions:
        findings.failed("update opens", exclusion.reason, round=number, participant=exclusion.participant)
    for update in collected.updates:
        findings.passed("update opens", round=number, participant=update.sender)
    if collected.exclusions or not collected.updates:
        findings.failed("re-aggregation", "not every included update opens with the keys given", round=number)
        return
    recomputed = cid_of(encode_global_model(federation, number, federated_average(collected.updates)))
    findings.expect("re-aggregation", str(lineage.global_model), str(recomputed),
                    f"FedAvg of the included updates (opened with {key.owner}'s key)", round=number)


def _check_run_files(federation: Federation, result: Audit, walk: _Walk, run_dir: Path) -> None:
    findings = result.findings
    accepted = [lineage for lineage in sorted(walk.rounds.values(), key=lambda r: r.round) if lineage.accepted]
    model_file = run_dir / "model.safetensors"
    if accepted and model_file.is_file():
        findings.expect("final model file", str(accepted[-1].global_model), str(cid_of(model_file.read_bytes())),
                        "model.safetensors must be the last accepted model")
    elif accepted:
        findings.failed("final model file", f"{model_file} is missing")
    summary = _json(run_dir / "summary.json")
    if summary is not None:
        claimed = [(r["round"], r["global_cid"]) for r in summary.get("rounds", []) if r.get("accepted")]
        on_chain = [(lineage.round, str(lineage.global_model)) for lineage in accepted]
        findings.expect("summary matches the chain", on_chain, claimed,
                        "summary.json's accepted rounds and models vs the chain's")
    try:
        config = _config(run_dir)
    except Exception as error:  # noqa: BLE001 - an unreadable config is a finding, not a crash
        reason = " ".join(str(error).split())
        findings.failed("federation parameters are the run's", f"config.yaml cannot be read: {reason}")
        config = None
    if config is not None:
        parameters = walk.parameters
        findings.expect("federation parameters are the run's",
                        ("0x" + task_hash(config).hex(), config["quorum"], config["attestation_threshold"]),
                        ("0x" + parameters.task_hash.hex(), parameters.quorum, parameters.attestation_threshold),
                        "the contract's task hash, quorum and threshold vs config.yaml")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _config(run_dir: Path) -> dict[str, Any] | None:
    from omegaconf import OmegaConf  # the run's config is YAML written by Hydra

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return config if isinstance(config, dict) else None

