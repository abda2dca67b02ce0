"""The Federation contract's vocabulary in Python: roles, statuses, refusals, exclusions, records.

Kept apart from the `Ledger` client so that verifiers, reports and error messages share
one definition of what the contract's numbers mean.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

from eth_utils import to_checksum_address

from fl_chain.chain.reverts import Revert
from fl_chain.floatbits import bits_float, float_bits
from fl_chain.rules import AggregationRule, rule_named
from fl_chain.storage.cid import Cid


class Role(IntFlag):
    PARTICIPANT = 1
    AGGREGATOR = 2
    VALIDATOR = 4


class RoundStatus(IntEnum):
    NONE = 0
    OPEN = 1
    FINALIZED = 2
    ACCEPTED = 3
    FAILED = 4


class Refusal(IntEnum):
    """Why the contract refused a commitment (mirrors Federation.Refusal)."""

    NONE = 0
    NOT_PARTICIPANT = 1
    ROUND_NOT_OPEN = 2
    WRONG_ATTEMPT = 3
    DEADLINE_PASSED = 4
    ALREADY_COMMITTED = 5
    BAD_SIGNATURE = 6
    NO_EXAMPLES = 7
    TOO_MANY_EXAMPLES = 8

    def explain(self, participant: str, round_number: int) -> str:
        """A sentence naming who was refused and why; a whole refused batch has no participant."""
        if int(participant, 16) == 0:
            return f"a relayed batch for round {round_number} was refused: {self._batch_reason()}"
        templates = {
            Refusal.NOT_PARTICIPANT: "{p} is not a member with the participant role (round {r})",
            Refusal.ROUND_NOT_OPEN: "{p} committed to round {r}, which is not open",
            Refusal.WRONG_ATTEMPT: "{p} committed to an earlier attempt of round {r}",
            Refusal.DEADLINE_PASSED: "participant {p} committed after the deadline of round {r}",
            Refusal.ALREADY_COMMITTED: "participant {p} already committed in round {r}",
            Refusal.BAD_SIGNATURE: (
                "a commitment naming {p} for round {r} carries a signature {p} did not make (for another round, "
                "federation or chain, or by someone else): refused, and it says nothing about {p}"
            ),
            Refusal.NO_EXAMPLES: "participant {p} committed an update of 0 examples in round {r}",
            Refusal.TOO_MANY_EXAMPLES: (
                "participant {p} claimed more examples in round {r} than the cap it was admitted with"
            ),
        }
        return templates.get(self, "commitment of {p} accepted in round {r}").format(p=participant, r=round_number)

    def _batch_reason(self) -> str:
        return {
            Refusal.ROUND_NOT_OPEN: "the round is not open",
            Refusal.WRONG_ATTEMPT: "it is for another attempt of the round",
            Refusal.DEADLINE_PASSED: "the round's deadline has passed",
        }.get(self, self.name.lower().replace("_", " "))


class ExclusionReason(IntEnum):
    """Why the aggregator left a committed update out (mirrors Federation.Exclusion)."""

    NONE = 0
    UNAVAILABLE = 1
    UNDECRYPTABLE = 2
    WRONG_HEADER = 3
    WRONG_SHAPE = 4
    NON_FINITE = 5
    OUT_OF_BOUNDS = 6
    LATE = 7
    OUTLIER = 8

    @property
    def label(self) -> str:
        """The reason in two words or fewer, for tables: "wrong shape"."""
        return "non-finite" if self is ExclusionReason.NON_FINITE else self.name.lower().replace("_", " ")

    def explain(self, participant: str, round_number: int) -> str:
        """A sentence naming whose update was excluded and why."""
        templates = {
            ExclusionReason.UNAVAILABLE: "the update of {p} for round {r} could not be fetched intact from the content store",
            ExclusionReason.UNDECRYPTABLE: (
                "the update of {p} for round {r} does not open: tampered, truncated or not sealed for the recipients"
            ),
            ExclusionReason.WRONG_HEADER: (
                "the header of {p}'s update for round {r} disagrees with its commitment "
                "(federation, chain, round, sender or examples)"
            ),
            ExclusionReason.WRONG_SHAPE: (
                "the update of {p} for round {r} does not have the base model's tensor names, dtypes and shapes"
            ),
            ExclusionReason.NON_FINITE: "the update of {p} for round {r} holds NaN or infinite values",
            ExclusionReason.OUT_OF_BOUNDS: (
                "the update of {p} for round {r} is farther from the base model than the federation's norm bound"
            ),
            ExclusionReason.LATE: "{p} committed to round {r} after the aggregator had read the round's commitments",
            ExclusionReason.OUTLIER: (
                "the update of {p} for round {r} is an outlier: farther from the round's median update than the "
                "federation's outlier test allows"
            ),
        }
        return templates.get(self, "the update of {p} for round {r} was excluded without a reason").format(
            p=participant, r=round_number)


@dataclass(frozen=True)
class FederationParameters:
    """What is fixed at deployment; `task_hash` binds the federation to its config.

    `committee_size` validators are drawn to attest each finalized attempt (0: every
    validator admitted before the round opened); `max_examples` caps any member's claimed
    example count; `update_norm_bound` is the largest L2 distance an update may have from
    its base model (anything farther is excluded as out of bounds); for `commit_grace`
    seconds after a round opens, participants the aggregator did not relay may commit
    themselves, and no attempt finalizes before then unless every participant committed;
    `rule_parameters` are the aggregation rule's (fl_chain/rules.py), 32 bytes."""

    task_hash: bytes
    aggregation_rule: int
    quorum: int
    round_duration: int
    attestation_threshold: int
    committee_size: int = 0
    max_examples: int = 1_000_000
    update_norm_bound: float = 100.0
    commit_grace: int = 0
    rule_parameters: bytes = bytes(32)

    def to_json(self) -> dict[str, Any]:
        """As federation files and `flchain status --json` show them (bytes in hex)."""
        return {**dataclasses.asdict(self), "task_hash": "0x" + self.task_hash.hex(),
                "rule_parameters": "0x" + self.rule_parameters.hex()}

    def as_abi(self) -> tuple:
        return (self.task_hash, self.aggregation_rule, self.quorum, self.round_duration, self.attestation_threshold,
                self.committee_size, self.max_examples, float_bits(self.update_norm_bound), self.commit_grace,
                self.rule_parameters)

    @classmethod
    def from_abi(cls, raw: Any) -> FederationParameters:
        """From the contract's Parameters struct: a tuple from a call, a mapping from an event."""
        if isinstance(raw, Mapping):
            raw = [raw[name] for name in ("taskHash", "aggregationRule", "quorum", "roundDuration",
                                          "attestationThreshold", "committeeSize", "maxExamples", "updateNormBound",
                                          "commitGrace", "ruleParameters")]
        task, rule, quorum, duration, threshold, committee, max_examples, norm_bits, grace, rule_parameters = raw
        return cls(bytes(task), rule, quorum, duration, threshold, committee, max_examples, bits_float(norm_bits), grace,
                   bytes(rule_parameters))


@dataclass(frozen=True)
class Member:
    address: str
    index: int
    roles: Role
    active: bool
    x25519: bytes
    since: int = 0  # the block of its latest admission: it validates rounds opened after it
    example_cap: int = 0  # the most examples one of its commitments may claim

    @classmethod
    def from_abi(cls, address: str, raw: Any) -> Member:
        index, roles, active, _listed, since, cap, key = raw
        return cls(to_checksum_address(address), index, Role(roles), active, bytes(key), since, cap)


@dataclass(frozen=True)
class RoundState:
    round: int
    status: RoundStatus
    attempt: int
    deadline: int
    commitments: int
    included: int
    attestations: int
    base: Cid | None
    global_model: Cid | None
    commitment_log: bytes
    opened_block: int
    dissents: int = 0


@dataclass(frozen=True)
class CommitmentRecord:
    """A commitment as the chain recorded it (from its Committed event)."""

    participant: str
    round: int
    cid: Cid
    examples: int
    block_number: int
    transaction: str


@dataclass(frozen=True)
class RelayOutcome:
    """What a relayed batch achieved: accepted participants, refusals with reasons, gas."""

    accepted: tuple[str, ...]
    refused: tuple[tuple[str, Refusal], ...]
    gas_used: int


def explain_revert(revert: Revert) -> str:
    """An operator-readable sentence for each of the contract's custom errors."""
    a = revert.args
    p = to_checksum_address(a["participant"]) if "participant" in a else ""
    if revert.name == "Refused":
        return Refusal(a["reason"]).explain(a["participant"], a["round"])
    messages = {
        "InvalidParameters": lambda: (
            "invalid federation parameters (quorum, round duration, threshold, example maximum, a positive finite "
            "norm bound and the admin must be set; a committee needs at least the threshold; the commit grace must "
            "be shorter than a round)"
        ),
        "NotAdmin": lambda: f"{a['caller']} is not the federation's admin",
        "NotAggregator": lambda: f"{a['caller']} is not the federation's current aggregator",
        "NotValidator": lambda: f"{a['caller']} is not a member with the validator role (or is the aggregator)",
        "NotOnCommittee": lambda: (
            f"{a['validator']} is not on the committee drawn to attest round {a['round']} "
            "(validators admitted after a round opened do not attest it)"
        ),
        "RolesChanged": lambda: (
            f"{a['member']} was admitted as {Role(a['before']).name.lower()} and can only come back as that, not as "
            f"{Role(a['requested']).name.lower()}: an address never changes what it does in a federation"
        ),
        "RolesConflict": lambda: (
            f"{a['member']} cannot be both the aggregator and a validator: a validator checks the aggregator's work"
        ),
        "WeakX25519Key": lambda: (
            f"the X25519 key of {a['member']} is a point of small order: nobody could seal updates for it"
        ),
        "ExampleCapAboveMaximum": lambda: (
            f"{a['member']} cannot be admitted with an example cap of {a['cap']}: the federation allows at most "
            f"{a['maximum']}"
        ),
        "MemberExists": lambda: f"{a['member']} is already a member",
        "UnknownMember": lambda: f"{a['member']} is not an active member",
        "LacksRole": lambda: f"{a['member']} lacks the {Role(a['role']).name.lower()} role",
        "LengthMismatch": lambda: "member lists of different lengths",
        "UnexpectedRound": lambda: f"round {a['given']} cannot be opened: the next round is {a['expected']}",
        "RoundInProgress": lambda: (
            f"round {a['round']} is still {RoundStatus(a['status']).name.lower()}: a new round can only "
            "start once it is accepted (or failed and reopened)"
        ),
        "BaseNotAccepted": lambda: (
            f"round {a['round']} must start from the latest accepted model "
            f"(digest 0x{a['acceptedDigest'].hex()}), not 0x{a['givenDigest'].hex()}"
        ),
        "RoundNotOpen": lambda: f"round {a['round']} is not open (it is {RoundStatus(a['status']).name.lower()})",
        "NotCommitted": lambda: f"member #{a['memberIndex']} did not commit in round {a['round']} and cannot be included",
        "ExclusionOutOfOrder": lambda: (
            f"exclusions in round {a['round']} must name each participant once, in ascending address order: "
            f"{p} is repeated or out of order"
        ),
        "InvalidExclusionReason": lambda: (
            f"the exclusion of {p} in round {a['round']} gives no reason the aggregator may give "
            f"({ExclusionReason(a['reason']).label}; lateness is for the contract to decide)"
        ),
        "ExcludedNotCommitted": lambda: (
            f"{p} did not commit in round {a['round']}, so there is no update of it to exclude"
        ),
        "ExcludedAndIncluded": lambda: f"{p} is both included and excluded in round {a['round']}",
        "CommitmentsUnaccounted": lambda: (
            f"the aggregator read {a['seen']} commitments of round {a['round']}, but {a['included']} are included "
            f"and {a['excluded']} excluded: every commitment it read must be included or excluded with a reason"
        ),
        "CommitWindowOpen": lambda: (
            f"round {a['round']} cannot be finalized before {a['until']}: participants may still commit themselves "
            "until then (or every participant must have committed)"
        ),
        "NotLate": lambda: (
            f"{p} cannot be excluded as late in round {a['round']}: the aggregator relayed its commitment, or it came "
            "while participants could still commit themselves"
        ),
        "SeenTooMany": lambda: (
            f"the aggregator claims to have read {a['seen']} commitments of round {a['round']}, "
            f"which has {a['commitments']}"
        ),
        "RoundNotFinalized": lambda: (
            f"round {a['round']} is not finalized (it is {RoundStatus(a['status']).name.lower()})"
        ),
        "AlreadyAttested": lambda: f"validator {a['validator']} already attested round {a['round']}",
        "CannotFail": lambda: (
            f"round {a['round']} ({RoundStatus(a['status']).name.lower()}) cannot be failed "
            f"before {a['notBefore']}"
        ),
    }
    message = messages.get(revert.name)
    return message() if message else f"the contract refused the call: {revert.name}({a})"


WHERE_NOT_WHAT = ("chain", "storage")  # config groups that say where a run happens, not what it trains


def experiment_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a config says is trained and how (task, data split, strategy, privacy, seed,
    quorum, drills...), without where it runs and who pays (chain, store)."""
    return {key: value for key, value in config.items() if key not in WHERE_NOT_WHAT}


def _rule(strategy: object) -> AggregationRule:
    if not isinstance(strategy, Mapping):
        raise TypeError(f"strategy is {type(strategy).__name__}, not a mapping")
    return rule_named(strategy)


def parameters_for(config: Mapping[str, Any]) -> FederationParameters:
    """The parameters a federation for this experiment must have: what `flchain run` and
    `flchain deploy` deploy, and what participants and `verify` check the chain against
    (a task hash alone would let a deployer loosen the bounds the contract enforces)."""
    rule = _rule(config["strategy"])
    return FederationParameters(
        task_hash=task_hash(config),
        aggregation_rule=rule.code,
        quorum=int(config["quorum"]),
        round_duration=int(config["round_duration"]),
        attestation_threshold=int(config["attestation_threshold"]),
        committee_size=int(config["committee_size"]),
        max_examples=int(config["max_examples"]),
        update_norm_bound=float(config["max_update_norm"]),
        commit_grace=int(config["commit_grace"]),
        rule_parameters=rule.parameters,
    )


def parameter_differences(expected: FederationParameters, found: FederationParameters) -> list[str]:
    """Each parameter in which `found` (the chain's) differs from `expected`, in words."""
    differences = []
    for name in FederationParameters.__dataclass_fields__:
        want, have = getattr(expected, name), getattr(found, name)
        if want != have:
            show = (lambda value: "0x" + value.hex()[:16] + "…") if isinstance(want, bytes) else repr
            differences.append(f"{name} {show(have)} on chain, {show(want)} in the experiment")
    return differences


def task_hash(config: Mapping[str, Any]) -> bytes:
    """Binds a federation on chain to its experiment: a federation deployed with `flchain
    deploy` matches the runs that use it, and a participant checks the settings it is sent."""
    return hashlib.sha256(json.dumps(experiment_of(config), sort_keys=True, separators=(",", ":")).encode()).digest()
