"""A federation's event log, in chain order: the audit trail a verifier replays.

Every state change of the Federation contract emits an event; read together, in block
and log order, they say who was a member when, which rounds opened on which model, who
committed what and when, what was finalized and attested. Block timestamps are attached
so deadlines can be checked against the time the chain itself recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fl_chain.chain.ledger import Ledger

EVENTS = (
    "FederationCreated", "AdminChanged", "MemberAdded", "MemberRemoved", "AggregatorChanged",
    "RoundOpened", "Committed", "CommitmentRefused", "UnverifiedEntrySkipped", "Excluded", "Finalized", "Attested", "Accepted", "RoundFailed",
)


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    timestamp: int
    transaction: str


def read_history(ledger: Ledger) -> list[Event]:
    """All of the federation's events, oldest first."""
    events: list[Event] = []
    timestamps: dict[int, int] = {}
    web3 = ledger.chain.web3
    for name in EVENTS:
        for log in getattr(ledger.contract.events, name)().get_logs(from_block=0):
            block = int(log["blockNumber"])
            if block not in timestamps:
                timestamps[block] = int(web3.eth.get_block(block)["timestamp"])
            events.append(Event(
                name=name,
                args=dict(log["args"]),
                block_number=block,
                log_index=int(log["logIndex"]),
                timestamp=timestamps[block],
                transaction="0x" + bytes(log["transactionHash"]).hex(),
            ))
    events.sort(key=lambda event: (event.block_number, event.log_index))
    return events
