"""The Federation contract's vocabulary in Python: roles, statuses, refusals, exclusions, records.

Kept apart from the `Ledger` client so that verifiers, reports and error messages share
one definition of what the contract's numbers mean.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

from eth_utils import to_checksum_address

from fl_chain.chain.reverts import Revert
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
                "the signature on {p}'s commitment for round {r} does not verify "
                "(signed for another round, federation or chain, or not by {p})"
            ),
            Refusal.NO_EXAMPLES: "participant {p} committed an update of 0 examples in round {r}",
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
        }
        return templates.get(self, "the update of {p} for round {r} was excluded without a reason").format(
            p=participant, r=round_number)


@dataclass(frozen=True)
class FederationParameters:
    """What is fixed at deployment; `task_hash` binds the federation to its config."""

    task_hash: bytes
    aggregation_rule: int
    quorum: int
    round_duration: int
    attestation_threshold: int


@dataclass(frozen=True)
class Member:
    address: str
    index: int
    roles: Role
    active: bool
    x25519: bytes


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
        "InvalidParameters": lambda: "invalid federation parameters (quorum, round duration, threshold and admin must be set)",
        "NotAdmin": lambda: f"{a['caller']} is not the federation's admin",
        "NotAggregator": lambda: f"{a['caller']} is not the federation's current aggregator",
        "NotValidator": lambda: f"{a['caller']} is not a member with the validator role",
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
        "BelowQuorum": lambda: f"round {a['round']} includes {a['included']} updates, below the quorum of {a['quorum']}",
        "ExclusionOutOfOrder": lambda: (
            f"exclusions in round {a['round']} must name each participant once, in ascending address order: "
            f"{p} is repeated or out of order"
        ),
        "ExclusionWithoutReason": lambda: f"the exclusion of {p} in round {a['round']} gives no reason",
        "ExcludedNotCommitted": lambda: (
            f"{p} did not commit in round {a['round']}, so there is no update of it to exclude"
        ),
        "ExcludedAndIncluded": lambda: f"{p} is both included and excluded in round {a['round']}",
        "CommitmentsUnaccounted": lambda: (
            f"round {a['round']} has {a['commitments']} commitments, but {a['included']} are included and "
            f"{a['excluded']} excluded: every commitment must be included or excluded with a reason"
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


def task_hash(config: Mapping[str, Any]) -> bytes:
    """Binds a federation on chain to its experiment config: what is trained and how (task,
    data split, strategy, privacy, seed, quorum, drills...), not where (chain, store), so a
    federation deployed with `flchain deploy` matches the runs that use it."""
    experiment = {key: value for key, value in config.items() if key not in WHERE_NOT_WHAT}
    return hashlib.sha256(json.dumps(experiment, sort_keys=True, separators=(",", ":")).encode()).digest()
