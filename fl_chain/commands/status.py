"""`flchain status --federation FILE --url URL`: a federation as its chain sees it.

Shows the federation (address, chain, admin, aggregator, parameters, latest accepted
model), its members, every round (status, attempt, commitments, included updates,
attestations, global model, deadline) and every exclusion with its reason (who was
excluded as an outlier in several rounds first), read from the chain, not from any run
directory.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fl_chain.chain.federation import ExclusionReason, FederationParameters, Member, RoundState, RoundStatus
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.opening import attach_federation
from fl_chain.commands.members import member_json, members_table, table
from fl_chain.errors import UsageError
from fl_chain.rules import rule_for
from fl_chain.storage.cid import Cid


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show a federation, its members and rounds from the chain",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--federation", type=Path, required=True, metavar="FILE",
                        help="the federation file `flchain deploy` wrote")
    parser.add_argument("--url", required=True, metavar="URL", help="a JSON-RPC node of the federation's chain")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    ledger = attach_federation(FederationFile.read(args.federation), args.url)
    status = FederationStatus.read(ledger)
    print(json.dumps(status.to_json(), indent=1) if args.json else status.render())
    return 0


@dataclass(frozen=True)
class FederationStatus:
    """Everything `status` shows, read from the chain."""

    address: str
    chain_id: int
    admin: str
    aggregator: str | None
    parameters: FederationParameters
    genesis_model: Cid | None
    latest_round: int
    latest_model: Cid
    members: list[Member]
    rounds: list[RoundState]
    exclusions: dict[int, list[tuple[str, ExclusionReason]]]  # each round's current attempt's

    @classmethod
    def read(cls, ledger: Ledger) -> FederationStatus:
        latest_round, latest_model = ledger.latest_accepted()
        aggregator = ledger.aggregator()
        rounds: list[RoundState] = []
        while (state := ledger.round(len(rounds) + 1)).status != RoundStatus.NONE:  # rounds open in order
            rounds.append(state)
        return cls(
            address=ledger.address,
            chain_id=ledger.chain.chain_id,
            admin=ledger.admin(),
            aggregator=None if int(aggregator, 16) == 0 else aggregator,
            parameters=ledger.parameters(),
            genesis_model=ledger.round(0).global_model,
            latest_round=latest_round,
            latest_model=latest_model,
            members=ledger.members(),
            rounds=rounds,
            exclusions={state.round: ledger.exclusions(state.round) for state in rounds},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "federation": {
                "address": self.address,
                "chain_id": self.chain_id,
                "admin": self.admin,
                "aggregator": self.aggregator,
                "parameters": self.parameters.to_json(),
                "genesis_model": _cid(self.genesis_model),
                "latest_accepted": {"round": self.latest_round, "global_model": str(self.latest_model)},
            },
            "members": [member_json(member) for member in self.members],
            "rounds": [
                {
                    "round": state.round,
                    "status": state.status.name.lower(),
                    "attempt": state.attempt,
                    "commitments": state.commitments,
                    "included": state.included,
                    "attestations": state.attestations,
                    "dissents": state.dissents,
                    "global_model": _cid(state.global_model),
                    "deadline": _utc(state.deadline),
                    "excluded": [{"participant": who, "reason": reason.label}
                                 for who, reason in self.exclusions.get(state.round, [])],
                }
                for state in self.rounds
            ],
            "outliers": self.outliers(),
        }

    def outliers(self) -> dict[str, list[int]]:
        """Each participant excluded as an outlier, with the rounds, most often first."""
        flagged: dict[str, list[int]] = {}
        for number, excluded in sorted(self.exclusions.items()):
            for who, reason in excluded:
                if reason == ExclusionReason.OUTLIER:
                    flagged.setdefault(who, []).append(number)
        return dict(sorted(flagged.items(), key=lambda item: (-len(item[1]), int(item[0], 16))))

    def render(self) -> str:
        parameters = self.parameters
        facts = [
            ("admin", self.admin),
            ("aggregator", self.aggregator or "none appointed"),
            ("task hash", "0x" + parameters.task_hash.hex()),
            ("aggregation rule", _rule_name(parameters)),
            ("quorum", str(parameters.quorum)),
            ("round duration", f"{parameters.round_duration} s"),
            ("attestation threshold", str(parameters.attestation_threshold)),
            ("committee", str(parameters.committee_size or "every validator")),
            ("examples per update", f"at most {parameters.max_examples} (each member's own cap below it)"),
            ("update norm bound", f"{parameters.update_norm_bound:g}"),
            ("commit grace", f"{parameters.commit_grace} s"),
            ("genesis model", _cid(self.genesis_model) or "-"),
            ("latest accepted", f"round {self.latest_round}, model {self.latest_model}"),
        ]
        width = max(len(name) for name, _ in facts)
        lines = [f"federation {self.address} on chain {self.chain_id}"]
        lines += [f"  {name.ljust(width)}  {value}" for name, value in facts]
        lines += ["", f"members: {len(self.members)}, {sum(m.active for m in self.members)} active"]
        if self.members:
            lines.append(members_table(self.members))
        lines += ["", f"rounds: {len(self.rounds)}"]
        if self.rounds:
            rows = [(str(r.round), r.status.name.lower(), str(r.attempt), str(r.commitments), str(r.included),
                     str(r.attestations), str(r.dissents), _cid(r.global_model) or "-", _utc(r.deadline))
                    for r in self.rounds]
            lines.append(table(("round", "status", "attempt", "commitments", "included", "attestations", "dissents",
                                "global model", "deadline (UTC)"), rows))
        excluded = [(str(number), who, reason.label) for number, items in sorted(self.exclusions.items())
                    for who, reason in items]
        lines += ["", f"exclusions: {len(excluded)}"]
        if excluded:
            lines.append(table(("round", "participant", "reason"), excluded))
        for who, numbers in self.outliers().items():
            lines.append(f"  {who}: an outlier in {len(numbers)} of {len(self.rounds)} rounds "
                         f"({', '.join(map(str, numbers))})")
        return "\n".join(lines)


def _cid(cid: Cid | None) -> str | None:
    return None if cid is None else str(cid)


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _rule_name(parameters: FederationParameters) -> str:
    try:
        rule = rule_for(parameters.aggregation_rule, parameters.rule_parameters)
    except UsageError:
        return f"{parameters.aggregation_rule} (unknown to this fl-chain, parameters 0x{parameters.rule_parameters.hex()})"
    return f"{rule.code} ({rule.name}: {rule.description})"
