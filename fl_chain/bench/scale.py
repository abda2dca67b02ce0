"""Scale: one full protocol round with 10, 100 and 1000 simulated participants.

The design promises that a round's cost grows with its participants, not faster: gas per
commitment stays flat (one relayed batch) and time per participant stays roughly flat.
Each count gets a fresh embedded chain and store, and one round runs in process, driven
by the round coordinator a Flower run drives, over the in-process transport: participants
seal, store and sign; the aggregator relays, collects, aggregates and finalizes; the
committee re-judges and attests while every participant signs its evaluation (the
"validate" stage). The figures are what a simulation of that size pays, without Flower's
messaging. Updates are the base model plus a seeded perturbation: training is not what is
measured here.
"""

from __future__ import annotations

import hashlib
import io
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
from fl_chain.chain.embedded import GAS_LIMIT, EmbeddedChain
from fl_chain.chain.federation import FederationParameters, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.inprocess import InProcessTransport
from fl_chain.messages import Ticket
from fl_chain.participant import ParticipantRole
from fl_chain.progress import Progress
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.round import RoundCoordinator, RoundPlan
from fl_chain.runlog import RunLog
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import Cid
from fl_chain.task import Evaluated, Trained
from fl_chain.timing import Stopwatch
from fl_chain.transport import TRAIN, Reply, Request

Tensors = Mapping[str, np.ndarray]
METRICS = ("loss",)  # a participant's evaluation here: its update's distance from the global model

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
    """Founds a federation of `participants` and lets the round coordinator take round 1
    to acceptance over the in-process transport (the coordinator a Flower run drives)."""
    setup = Stopwatch()
    with setup("setup"):
        say(f"scale: {participants} participants: deriving keys, founding the federation")
        consortium = SimulatedConsortium.create(SEED, participants, validators, seed_accounts=True)
        embedded = EmbeddedChain.create(funded=consortium.transacting_addresses)
        chain = embedded.connect()
        store = LocalStore(directory / "store")
        genesis = protocol.publish_genesis_model(store, small_model())
        federation = Federation(_found(consortium, chain, participants, genesis), store)
    recipients = _RecipientsOnce(federation)
    transport = _Measured(InProcessTransport(_responders(federation, consortium, recipients)), say)
    plan = RoundPlan(ROUND, federation.ledger.parameters().quorum, 1.0, ROUND_DURATION, seed=SEED, fast_forward=True)
    run_dir = directory / "run"
    run_dir.mkdir()
    coordinator = RoundCoordinator(federation, consortium.aggregator, plan, transport, RunLog(run_dir, metrics=METRICS),
                                   Progress(ROUND, io.StringIO()))
    gas_before = chain.gas_used
    try:
        coordinator.run_round(ROUND)
    except ProtocolError as failed:
        say(f"scale: {participants} participants: {failed}")
    state = federation.ledger.round(ROUND)
    seconds = coordinator.seconds
    stage_seconds = {"open": seconds.get("open_round", 0.0), "commit": transport.train_seconds,
                     **{stage: seconds.get(stage, 0.0) for stage in ("relay", "collect", "aggregate", "finalize")},
                     "validate": seconds.get("attest_evaluate", 0.0)}
    cost = RoundCost(
        participants=participants,
        accepted=state.status == RoundStatus.ACCEPTED,
        included=state.included,
        setup_seconds=setup.seconds["setup"],
        stage_seconds=stage_seconds,
        commit_seconds={**transport.commit_seconds, "recipients": recipients.seconds},
        round_gas=chain.gas_used - gas_before,
        relay_gas=coordinator.gas.get("relay", 0),
    )
    say(f"scale: {participants} participants: round {'accepted' if cost.accepted else 'NOT accepted'} "
        f"in {cost.seconds:.2f} s, {cost.round_gas:,} gas")
    return cost


class _Measured:
    """The in-process transport, timing the training requests and summing what each
    participant reports it spent committing (fetch, update, encode, encrypt, store, sign)."""

    def __init__(self, inner: InProcessTransport, say: ProgressLine) -> None:
        self.inner, self.say = inner, say
        self.train_seconds = 0.0
        self.commit_seconds: dict[str, float] = {}

    def participants(self) -> list[str]:
        return self.inner.participants()

    def send(self, requests: Sequence[Request], timeout: float) -> list[Reply]:
        if not any(request.kind == TRAIN for request in requests):
            return self.inner.send(requests, timeout)
        self.say(f"scale: {len(requests)} participants committing")
        started = time.perf_counter()
        replies = self.inner.send(requests, timeout)
        self.train_seconds += time.perf_counter() - started
        for reply in replies:
            for name, value in (reply.content.get("metrics") or {}).items():
                if name.startswith("seconds_"):
                    stage = name.removeprefix("seconds_")
                    self.commit_seconds[stage] = self.commit_seconds.get(stage, 0.0) + float(value)
        return replies


def _responders(federation: Federation, consortium: SimulatedConsortium,
                recipients: _RecipientsOnce) -> dict[str, ParticipantRole]:
    """Every participant, its training the base plus seeded noise, its evaluation the
    distance from its own update; all read the round's recipients once, as the simulated
    participants of one process would from the same chain state."""
    roles = {}
    for index, participant in enumerate(consortium.participants):
        def train(base: Tensors, ticket: Ticket, index: int = index) -> Trained:
            update, examples = perturbed(base, index)
            return Trained(update, examples, {})

        def evaluate(model: Tensors, index: int = index) -> Evaluated:
            update, examples = perturbed(model, index)
            return Evaluated({"loss": float(np.mean([np.mean((update[n] - model[n]) ** 2) for n in model]))}, examples)

        roles[participant.address] = ParticipantRole(federation, lambda participant=participant: participant, train,
                                                     evaluate, recipients=recipients)
    return roles


class _RecipientsOnce:
    """The round's recipients, read from the chain by the first participant (timed)."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.read: dict[tuple[int, int], list[bytes]] = {}
        self.seconds = 0.0

    def __call__(self, ticket: Ticket) -> list[bytes]:
        key = (ticket.round, ticket.attempt)
        if key not in self.read:
            started = time.perf_counter()
            self.read[key] = protocol.update_recipients(self.federation, ticket.round)
            self.seconds += time.perf_counter() - started
        return self.read[key]


def small_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {name: rng.normal(scale=0.1, size=shape).astype(np.float32) for name, shape in MODEL_SHAPES.items()}


def perturbed(base: Mapping[str, np.ndarray], index: int) -> tuple[dict[str, np.ndarray], int]:
    """A participant's stand-in for training: the base plus seeded noise, and its example count."""
    rng = np.random.default_rng((SEED, index))
    update = {name: tensor + rng.normal(scale=0.01, size=tensor.shape).astype(np.float32)
              for name, tensor in base.items()}
    return update, int(rng.integers(10, 100))


def _found(consortium: SimulatedConsortium, chain: Chain, participants: int, genesis: Cid) -> Ledger:
    parameters = FederationParameters(
        task_hash=hashlib.sha256(b"fl-chain scale benchmark").digest(),
        aggregation_rule=0,
        quorum=max(1, participants // 2),
        round_duration=ROUND_DURATION,
        attestation_threshold=ATTESTATION_THRESHOLD,
    )
    return consortium.found(chain, parameters, genesis)
