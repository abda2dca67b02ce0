"""Scale: one full protocol round with 10, 100 and 1000 simulated participants.

The design promises that a round's cost grows with its participants, not faster: gas per
commitment stays flat (one relayed batch) and time per participant stays roughly flat.
Each count gets a fresh embedded chain and store, and one round runs in process through
the real protocol functions (seal, store, sign, relay, collect, aggregate, finalize,
recompute, attest), so the figures are what a simulation of that size pays. Updates are
the base model plus a seeded perturbation: training is not what is measured here.
"""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_chain import protocol
from fl_chain.bench.throughput import render_table
from fl_chain.chain.chain import Chain
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.embedded import GAS_LIMIT, EmbeddedChain
from fl_chain.chain.federation import FederationParameters, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.messages import Ticket
from fl_chain.protocol import Federation
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid
from fl_chain.timing import Stopwatch

DEFAULT_PARTICIPANT_COUNTS = (10, 100, 1000)
DEFAULT_VALIDATORS = 3
TARGET_PARTICIPANTS = 1000
ATTESTATION_THRESHOLD = 2
ROUND = 1
SEED = 0
# Long enough that the slowest commit stage measured stays inside the round's deadline.
ROUND_DURATION = 6 * 3600
# Registering a member costs ~71k gas: 500 per transaction stay well under the 60M
# block gas limit (with the client's estimate headroom), where 1000 at once do not.
ROUND_STAGES = ("open", "commit", "relay", "collect", "aggregate", "finalize", "validate")
# A small MLP (100 -> 96 -> 10): 10,666 float32 parameters, a 43 kB update.
MODEL_SHAPES = {
    "hidden.weight": (96, 100), "hidden.bias": (96,), "output.weight": (10, 96), "output.bias": (10,),
}

ProgressLine = Callable[[str], None]


def progress_to_stderr(line: str) -> None:
    """A `progress` for `measure_scale`: a 1000-participant round takes about half a minute."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RoundCost:
    """What one round with `participants` participants cost, stage by stage."""

    participants: int
    accepted: bool
    included: int
    setup_seconds: float
    stage_seconds: Mapping[str, float]
    commit_seconds: Mapping[str, float]
    round_gas: int
    relay_gas: int

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def gas_per_participant(self) -> float:
        return self.round_gas / self.participants

    @property
    def relay_gas_per_commitment(self) -> float:
        return self.relay_gas / self.participants

    @property
    def relay_block_share(self) -> float:
        """How much of a block the one relayed batch fills: how far one batch can grow."""
        return self.relay_gas / GAS_LIMIT

    def as_json(self) -> dict[str, Any]:
        return {
            "participants": self.participants,
            "accepted": self.accepted,
            "included": self.included,
            "setup_seconds": round(self.setup_seconds, 4),
            "round_seconds": round(self.seconds, 4),
            "ms_per_participant": round(1000 * self.seconds / self.participants, 4),
            "stage_seconds": {stage: round(seconds, 4) for stage, seconds in self.stage_seconds.items()},
            "commit_seconds": {stage: round(seconds, 4) for stage, seconds in self.commit_seconds.items()},
            "round_gas": self.round_gas,
            "gas_per_participant": round(self.gas_per_participant, 1),
            "relay_gas_per_commitment": round(self.relay_gas_per_commitment, 1),
            "relay_block_share": round(self.relay_block_share, 4),
        }


@dataclass(frozen=True)
class Growth:
    """How time and gas grew from one participant count to the next.

    The exponent is log(cost ratio) / log(participant ratio): 1 is linear, 2 quadratic.
    """

    smaller: RoundCost
    larger: RoundCost

    @property
    def participant_ratio(self) -> float:
        return self.larger.participants / self.smaller.participants

    @property
    def time_ratio(self) -> float:
        return self.larger.seconds / self.smaller.seconds

    @property
    def gas_ratio(self) -> float:
        return self.larger.round_gas / self.smaller.round_gas

    def exponent(self, ratio: float) -> float:
        return math.log(ratio) / math.log(self.participant_ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.smaller.participants,
            "to": self.larger.participants,
            "participant_ratio": round(self.participant_ratio, 4),
            "time_ratio": round(self.time_ratio, 4),
            "gas_ratio": round(self.gas_ratio, 4),
            "time_exponent": round(self.exponent(self.time_ratio), 4),
            "gas_exponent": round(self.exponent(self.gas_ratio), 4),
        }


@dataclass(frozen=True)
class ScaleFigures:
    rounds: tuple[RoundCost, ...]

    @property
    def growth(self) -> list[Growth]:
        return [Growth(smaller, larger) for smaller, larger in zip(self.rounds, self.rounds[1:])]

    @property
    def target_round(self) -> RoundCost | None:
        """The round with the target's participant count, if it was measured."""
        return next((cost for cost in self.rounds if cost.participants == TARGET_PARTICIPANTS), None)

    def target_line(self) -> str:
        target = self.target_round
        if target is None:
            result = f"not measured (largest round: {self.rounds[-1].participants} participants)"
        else:
            result = "met" if target.accepted else "missed: the round was not accepted"
        return f"target: a {TARGET_PARTICIPANTS}-participant round completes and is accepted: {result}"

    def table(self) -> str:
        rows = [("participants", "included", "accepted", "round s", "ms/participant", "round gas",
                 "gas/participant", "relay gas/commitment", "relay % of block", "setup s")]
        rows += [
            (f"{cost.participants:,}", f"{cost.included:,}", "yes" if cost.accepted else "NO",
             f"{cost.seconds:.2f}", f"{1000 * cost.seconds / cost.participants:.1f}", f"{cost.round_gas:,}",
             f"{cost.gas_per_participant:,.0f}", f"{cost.relay_gas_per_commitment:,.0f}",
             f"{100 * cost.relay_block_share:.1f}%", f"{cost.setup_seconds:.2f}")
            for cost in self.rounds
        ]
        stages = [("participants", *ROUND_STAGES)]
        stages += [(f"{cost.participants:,}", *(f"{cost.stage_seconds[s]:.3f}" for s in ROUND_STAGES))
                   for cost in self.rounds]
        parts = sorted({part for cost in self.rounds for part in cost.commit_seconds})
        commits = [("participants", *parts)]
        commits += [(f"{cost.participants:,}", *(f"{cost.commit_seconds.get(part, 0.0):.3f}" for part in parts))
                    for cost in self.rounds]
        growth = [("participants", "x participants", "x time", "time exponent", "x gas", "gas exponent")]
        growth += [
            (f"{g.smaller.participants:,} -> {g.larger.participants:,}", f"{g.participant_ratio:.1f}",
             f"{g.time_ratio:.2f}", f"{g.exponent(g.time_ratio):.2f}", f"{g.gas_ratio:.2f}",
             f"{g.exponent(g.gas_ratio):.2f}")
            for g in self.growth
        ]
        sections = [render_table(rows), "seconds per stage", render_table(stages),
                    "seconds inside the commit stage, summed over participants (recipients: read once)",
                    render_table(commits)]
        if self.growth:
            sections += ["growth (exponent 1 = linear in participants)", render_table(growth)]
        return "\n".join([*sections, self.target_line()])

    def as_json(self) -> dict[str, Any]:
        largest = self.rounds[-1]
        return {
            "participants": largest.participants,
            "round_seconds": round(largest.seconds, 4),
            "round_gas": largest.round_gas,
            "gas_per_participant": round(largest.gas_per_participant, 1),
            "accepted": all(cost.accepted for cost in self.rounds),
            "target_participants": TARGET_PARTICIPANTS,
            "target_met": self.target_round is not None and self.target_round.accepted,
            "rounds": [cost.as_json() for cost in self.rounds],
            "growth": [g.as_json() for g in self.growth],
        }


def measure_scale(
    participant_counts: Sequence[int] = DEFAULT_PARTICIPANT_COUNTS,
    validators: int = DEFAULT_VALIDATORS,
    progress: ProgressLine | None = None,
) -> ScaleFigures:
    """One round per participant count, smallest first, each on its own chain and store."""
    counts = sorted(set(participant_counts))
    if validators < ATTESTATION_THRESHOLD:
        raise UsageError(
            f"{validators} validators cannot reach the attestation threshold of {ATTESTATION_THRESHOLD}"
        )
    if not counts or counts[0] < validators:
        raise UsageError(f"every participant count must be at least the {validators} validators, got {counts}")
    say = progress or (lambda _: None)
    rounds = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="flchain-scale-") as directory:
            rounds.append(measure_round(count, validators, Path(directory), say))
    return ScaleFigures(tuple(rounds))


def measure_round(participants: int, validators: int, directory: Path, say: ProgressLine) -> RoundCost:
    """Founds a federation of `participants` and runs round 1 through to acceptance."""
    setup = Stopwatch()
    with setup("setup"):
        say(f"scale: {participants} participants: deriving keys, founding the federation")
        consortium = SimulatedConsortium.create(SEED, participants, validators, seed_accounts=True)
        embedded = EmbeddedChain.create(funded=consortium.transacting_addresses)
        chain = embedded.connect()
        store = LocalStore(directory)
        base = small_model()
        genesis = protocol.publish_genesis_model(store, base)
        federation = Federation(_found(consortium, chain, participants, genesis), store)

    stages, commit = Stopwatch(), Stopwatch()
    gas_before = chain.gas_used
    with stages("open"):
        ticket = protocol.open_round(federation, consortium.aggregator, ROUND)
    with stages("commit"):
        started = time.perf_counter()
        # Every simulated participant would read the same keys from the same chain state.
        with commit("recipients"):
            recipients = protocol.update_recipients(federation, ROUND)
        receipts = []
        for index, participant in enumerate(consortium.participants):
            receipts.append(_participate(federation, participant, index, ticket, recipients, commit))
            if (index + 1) % max(1, participants // 10) == 0:
                elapsed = time.perf_counter() - started
                say(f"scale: {participants} participants: {index + 1} committed ({elapsed:.1f} s)")
    say(f"scale: {participants} participants: relaying {len(receipts)} commitments in one batch")
    with stages("relay"):
        outcome = protocol.relay(federation, consortium.aggregator, receipts)
    with stages("collect"):
        rules = protocol.UpdateRules.for_round(federation, ROUND)
        collected = protocol.collect(federation, consortium.aggregator.x25519_private, ROUND, rules)
    with stages("aggregate"):
        _, global_model = protocol.aggregate(federation, ROUND, collected)
    with stages("finalize"):
        protocol.finalize(federation, consortium.aggregator, ROUND, global_model, collected)
    say(f"scale: {participants} participants: {len(collected.included)} updates aggregated, validators recomputing")
    with stages("validate"):
        for validator in consortium.validators[:ATTESTATION_THRESHOLD]:
            protocol.attest(federation, validator, ROUND, protocol.judge(federation, validator, ROUND).model)
    accepted = federation.ledger.round(ROUND).status == RoundStatus.ACCEPTED
    cost = RoundCost(
        participants=participants,
        accepted=accepted,
        included=len(collected.included),
        setup_seconds=setup.seconds["setup"],
        stage_seconds=dict(stages.seconds),
        commit_seconds=dict(commit.seconds),
        round_gas=chain.gas_used - gas_before,
        relay_gas=outcome.gas_used if outcome is not None else 0,
    )
    say(f"scale: {participants} participants: round {'accepted' if accepted else 'NOT accepted'} "
        f"in {cost.seconds:.2f} s, {cost.round_gas:,} gas")
    return cost


def small_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {name: rng.normal(scale=0.1, size=shape).astype(np.float32) for name, shape in MODEL_SHAPES.items()}


def perturbed(base: Mapping[str, np.ndarray], index: int) -> tuple[dict[str, np.ndarray], int]:
    """A participant's stand-in for training: the base plus seeded noise, and its example count."""
    rng = np.random.default_rng((SEED, index))
    update = {name: tensor + rng.normal(scale=0.01, size=tensor.shape).astype(np.float32)
              for name, tensor in base.items()}
    return update, int(rng.integers(10, 100))


def _participate(
    federation: Federation,
    participant: Identity,
    index: int,
    ticket: Ticket,
    recipients: Sequence[bytes],
    stopwatch: Stopwatch,
) -> SignedCommitment:
    with stopwatch("fetch"):
        base = protocol.fetch_global_model(federation, ticket)
    with stopwatch("update"):
        update, examples = perturbed(base, index)
    return protocol.commit_update(federation, participant, ticket, update, examples, stopwatch, recipients)


def _found(consortium: SimulatedConsortium, chain: Chain, participants: int, genesis: Cid) -> Ledger:
    parameters = FederationParameters(
        task_hash=hashlib.sha256(b"fl-chain scale benchmark").digest(),
        aggregation_rule=0,
        quorum=max(1, participants // 2),
        round_duration=ROUND_DURATION,
        attestation_threshold=ATTESTATION_THRESHOLD,
    )
    return consortium.found(chain, parameters, genesis)
