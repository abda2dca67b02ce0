"""Gas per commitment and per round: relayed batches and direct commitments against the
naive design.

A round's gas is everything the protocol spends on it: opening, the relayed batch,
finalizing with every participant included, and one attestation (add one attestation's
cost per extra validator of the threshold).

The naive design (contracts/NaiveRegistry.sol) is what blockchain-FL prototypes tend to
do: one transaction per participant that stores the update's CID as a string. Gas is
deterministic for a given contract and call, so one measurement per figure suffices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from fl_chain.chain.artifacts import NAIVE_REGISTRY
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import FederationParameters, Role
from fl_chain.chain.ledger import Ledger
from fl_chain.identity import Identity
from fl_chain.storage.cid import Cid
from fl_chain.storage.unixfs import cid_of

DEFAULT_BATCH_SIZES = (1, 10, 100)


@dataclass(frozen=True)
class GasFigures:
    batch_sizes: tuple[int, ...]
    relayed_per_commitment: dict[int, float]
    per_round: dict[int, int]
    direct_per_commitment: float
    naive_per_commitment: float

    def table(self) -> str:
        rows = [("design", "gas per commitment", "vs naive", "gas per round", "naive per round")]
        for size in self.batch_sizes:
            gas = self.relayed_per_commitment[size]
            rows.append((f"{size} participants, relayed batch", f"{gas:,.0f}", f"{gas / self.naive_per_commitment:.2f}x",
                         f"{self.per_round[size]:,}", f"{size * self.naive_per_commitment:,.0f}"))
        rows.append(("direct (own transaction)", f"{self.direct_per_commitment:,.0f}",
                     f"{self.direct_per_commitment / self.naive_per_commitment:.2f}x", "", ""))
        rows.append(("naive: CID string, one tx each", f"{self.naive_per_commitment:,.0f}", "1.00x", "", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def _update_cid(identity: Identity, round_number: int) -> Cid:
    return cid_of(hashlib.sha256(f"{identity.address}/{round_number}".encode()).digest() * 16384)


def measure_gas(batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> GasFigures:
    """Measures on a fresh embedded chain (gas does not depend on the backend)."""
    admin, aggregator = Identity.derive("gas-bench", "admin"), Identity.derive("gas-bench", "aggregator")
    validator = Identity.derive("gas-bench", "validator")
    participants = [Identity.derive("gas-bench", f"participant-{i}") for i in range(max(batch_sizes) + 1)]
    embedded = EmbeddedChain.create(funded=[admin.address, aggregator.address, validator.address,
                                            participants[-1].address])
    chain = embedded.connect()
    genesis = cid_of(b"gas benchmark genesis model")
    parameters = FederationParameters(b"\x00" * 32, 0, 1, 3600, 1)
    ledger = Ledger.deploy(chain, admin.account, parameters, genesis)
    ledger.add_members(admin.account, [(aggregator.address, aggregator.x25519_public, Role.AGGREGATOR),
                                       (validator.address, validator.x25519_public, Role.VALIDATOR)])
    ledger.add_members(admin.account, [(p.address, p.x25519_public, Role.PARTICIPANT) for p in participants])
    ledger.set_aggregator(admin.account, aggregator.address)

    relayed: dict[int, float] = {}
    per_round: dict[int, int] = {}
    base = genesis
    for round_number, size in enumerate(batch_sizes, start=1):
        gas_before = chain.gas_used
        state = ledger.open_round(aggregator.account, round_number, base)
        batch = [ledger.sign(p.account, round_number, state.attempt, _update_cid(p, round_number), 100)
                 for p in participants[:size]]
        outcome = ledger.relay(aggregator.account, batch)
        relayed[size] = outcome.gas_used / size
        base = _update_cid(aggregator, round_number)
        ledger.finalize(aggregator.account, round_number, base, [p.address for p in participants[:size]])
        ledger.attest(validator.account, round_number, base)
        per_round[size] = chain.gas_used - gas_before

    direct_round = len(batch_sizes) + 1
    ledger.open_round(aggregator.account, direct_round, base)
    direct = ledger.commit(participants[-1].account, direct_round, _update_cid(participants[-1], direct_round), 100)
    return GasFigures(tuple(batch_sizes), relayed, per_round, float(direct["gasUsed"]),
                      _naive_gas(chain, participants[-1]))


def _naive_gas(chain: Chain, participant: Identity) -> float:
    receipt = chain.deploy(participant.account, NAIVE_REGISTRY.abi, NAIVE_REGISTRY.bytecode)
    registry = chain.web3.eth.contract(address=receipt["contractAddress"], abi=NAIVE_REGISTRY.abi)
    cid = str(_update_cid(participant, 1))
    submitted = chain.transact(participant.account, registry.functions.submit(1, cid, 100))
    return float(submitted["gasUsed"])
