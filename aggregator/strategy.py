"""The on-chain strategy: FedAvg (or FedProx) whose every round goes through the contract.

FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data". FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous
Networks" (the proximal term lives in the participants' local training).

Flower's base `Strategy.start` runs train then evaluate; a round here has more steps, so
`start` is overridden to run them in protocol order:

    open on chain -> train (participants commit) -> relay receipts -> collect by on-chain
    CIDs -> aggregate -> finalize -> validators re-compute and attest -> evaluate

An attempt that misses the quorum (participants crashed or timed out) is failed on chain
after its deadline and the round reopens as the next attempt. Every step starts from the
chain's state, which is what lets `flchain resume` finish a round a killed aggregator left.

The Flower replies only carry receipts: the updates aggregated are those the chain says
were committed. Sampling is seeded and done over participant addresses (Flower's node ids
are random), and aggregation is in address order, so a run replays exactly.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from aggregator.drill import KillDrill
from clients import blobs
from clients.data.preprocessing import SharedPreprocessing, TableSummary
from clients.settings import RunSettings
from fl_chain import protocol
from fl_chain.chain.commitment import Commitment, SignedCommitment
from fl_chain.chain.errors import TransactionReverted
from fl_chain.chain.federation import Role, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import FlChainError
from fl_chain.identity import Identity
from fl_chain.progress import Progress
from fl_chain.protocol import Federation, ProtocolError, RoundTicket
from fl_chain.runlog import RoundSummary, RunLog
from fl_chain.storage.cid import Cid
from fl_chain.timing import Stopwatch

GREETING_TIMEOUT = 120.0  # seconds participants get to start and say who they are
COLLECTIONS = 3  # times the aggregator collects a round whose commitments keep arriving


@dataclass(frozen=True)
class RoundPlan:
    rounds: int
    quorum: int
    fraction_train: float
    attestation_threshold: int
    reply_timeout: float
    max_attempts: int = 3
    # the chain is the run's own development chain: move its clock past a deadline
    # instead of waiting for it (a simulation has nobody else to wait for)
    fast_forward: bool = False
    # every party keeps its own content store (a deployment): blobs travel in the messages
    # (clients/blobs.py) and are checked against the CIDs the chain names
    ship_blobs: bool = False


class OnChainStrategy(Strategy):
    """Drives rounds through the Federation contract; the aggregator is trusted for nothing.

    Each step starts from what the chain says, so a strategy started on a half-done round
    (`flchain resume`) finishes it: it asks only participants that have not committed,
    re-aggregates to the same CID, and lets only validators that have not attested attest.
    """

    def __init__(
        self,
        federation: Federation,
        aggregator: Identity,
        settings: RunSettings,
        plan: RoundPlan,
        runlog: RunLog,
        progress: Progress,
        drill: KillDrill | None = None,
    ) -> None:
        self.federation = federation
        self.aggregator = aggregator
        self.settings = settings
        self.plan = plan
        self.runlog = runlog
        self.progress = progress
        self.drill = drill
        self.nodes: dict[str, int] = {}  # participant address -> Flower node id
        self._addresses: dict[int, str] = {}  # and back
        self.validators: list[str] = []
        self._exclusions: list[tuple[str, str]] = []  # (participant, why its update is not in)
        self._participant_metrics: dict[str, dict[str, float]] = {}

    @property
    def ledger(self) -> Ledger:
        return self.federation.ledger

    # ------------------------------------------------------------ the round loop

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 0,
              timeout: float = 0, **_unused: object) -> Result:
        self._greet(grid)
        first = len(self.runlog.rounds) + 1
        accepted, _ = self.ledger.latest_accepted()
        if accepted > first:
            raise ProtocolError(f"the chain has {accepted} accepted rounds but the run directory records only "
                                f"{first - 1}: it belongs to another run of this federation")
        if first > 1:
            done = "round 1 is" if first == 2 else f"rounds 1-{first - 1} are"
            self.progress.note(f"resuming at round {first}: {done} accepted on chain")
        for round_number in range(first, self.plan.rounds + 1):
            self._run_round(grid, round_number)
        return Result()

    def _run_round(self, grid: Grid, round_number: int) -> None:
        stopwatch = Stopwatch()
        gas_before = self.ledger.chain.gas_used
        self._exclusions, self._participant_metrics = [], {}
        resumed = self.ledger.round(round_number).status != RoundStatus.NONE
        with stopwatch("total"):
            self._settle(grid, round_number, stopwatch)
            state = self.ledger.round(round_number)
            global_model = state.global_model
            assert global_model is not None
            self.progress.stage(round_number, "validators attesting, participants evaluating")
            with stopwatch("attest_evaluate"):
                attest_gas, evaluation = self._attest_and_evaluate(grid, round_number, global_model)
        state = self.ledger.round(round_number)
        accuracy = float(evaluation["accuracy"]) if evaluation else None
        loss = float(evaluation["loss"]) if evaluation else None
        summary = RoundSummary(
            round=round_number,
            global_cid=str(global_model),
            accepted=state.status == RoundStatus.ACCEPTED,
            commitments=state.commitments,
            included=state.included,
            accuracy=accuracy,
            loss=loss,
            gas_used=self.ledger.chain.gas_used - gas_before + attest_gas,
            seconds=round(stopwatch.seconds["total"], 3),
            exclusions=[{"participant": participant, "reason": reason} for participant, reason in self._exclusions],
            attempt=state.attempt,
            resumed=resumed,
        )
        self._record_participants(round_number)
        self.runlog.round(summary, stopwatch.seconds)
        shown = f"accuracy {accuracy:.4f}" if accuracy is not None else "no evaluation"
        retried = f", attempt {state.attempt}" if state.attempt > 1 else ""
        self.progress.done(round_number, f"{state.included}/{state.commitments} updates, model "
                                         f"{str(global_model)[:16]}…, accepted{retried}, {shown}")

    def _settle(self, grid: Grid, round_number: int, stopwatch: Stopwatch) -> None:
        """Takes the round from whatever state the chain has it in to finalized.

        An attempt without the quorum is failed on chain once its deadline passes and the
        round reopens as the next attempt; after `max_attempts` failures here the run stops
        (a resumed run gets as many again: by then the cause may be fixed).
        """
        failures = 0
        while True:
            state = self.ledger.round(round_number)
            if state.status in (RoundStatus.FINALIZED, RoundStatus.ACCEPTED):
                return
            if state.status in (RoundStatus.NONE, RoundStatus.FAILED):
                if failures >= self.plan.max_attempts:
                    raise ProtocolError(f"round {round_number} failed {failures} attempts in a row (max_attempts "
                                        f"{self.plan.max_attempts})")
                self.progress.stage(round_number, "opening on chain")
                with stopwatch("open_round"):
                    protocol.open_round(self.federation, self.aggregator, round_number)
                self._checkpoint(round_number, "opened")
                state = self.ledger.round(round_number)
            assert state.base is not None
            ticket = RoundTicket(round_number, state.attempt, state.base, state.deadline)
            self._gather(grid, ticket, stopwatch)
            self._checkpoint(round_number, "relayed")
            committed = self.ledger.round(round_number).commitments
            if committed < self.plan.quorum:
                self._fail(ticket, committed)
                failures += 1
                continue
            self._conclude(ticket, stopwatch)

    def _gather(self, grid: Grid, ticket: RoundTicket, stopwatch: Stopwatch) -> None:
        """Asks the sampled participants that have not committed yet to train, and relays
        their receipts; one that fails or does not answer in time is noted, not fatal."""
        committed = set(self.ledger.committed(ticket.round))
        asked = [address for address in self._sample(ticket.round) if address not in committed]
        if not asked:
            return
        if self._chain_time() > ticket.deadline:
            self.progress.note(f"round {ticket.round} attempt {ticket.attempt}: its deadline has passed, "
                               "no more commitments can be accepted")
            return
        self.progress.stage(ticket.round, "training")
        config = ConfigRecord({"round": ticket.round, "attempt": ticket.attempt, "base": str(ticket.base),
                               "deadline": ticket.deadline})
        messages = [self._message(address, MessageType.TRAIN, config, [ticket.base]) for address in asked]
        replies = list(grid.send_and_receive(messages, timeout=self.plan.reply_timeout))
        answered = {self._addresses[reply.metadata.src_node_id] for reply in replies}
        for address in asked:
            if address not in answered:
                self._exclude(address, f"attempt {ticket.attempt}: no reply within {self.plan.reply_timeout:g} s")
        receipts = self._receipts(replies, ticket.attempt)
        self.progress.stage(ticket.round, f"relaying {len(receipts)} commitments")
        with stopwatch("relay"):
            outcome = protocol.relay(self.federation, self.aggregator, receipts)
        if outcome is not None:
            for participant, reason in outcome.refused:
                self._exclude(participant, reason.explain(participant, ticket.round))

    def _fail(self, ticket: RoundTicket, committed: int) -> None:
        """Marks an attempt that missed the quorum as failed on chain, once its deadline passed."""
        self.progress.note(f"round {ticket.round} attempt {ticket.attempt}: {committed} commitments, below the "
                           f"quorum of {self.plan.quorum}; failing it on chain and retrying")
        while (wait := ticket.deadline + 1 - self._chain_time()) > 0:
            if self.plan.fast_forward:  # blocks may run ahead of the clock: re-check after moving it
                self.ledger.chain.increase_time(wait)
            else:
                self.progress.note(f"waiting {wait} s for round {ticket.round}'s deadline to pass")
                time.sleep(wait)
        self.ledger.fail_round(self.aggregator.account, ticket.round)

    def _conclude(self, ticket: RoundTicket, stopwatch: Stopwatch) -> None:
        """Collect, aggregate and finalize: the aggregator's half of the round, from the chain.

        finalize must account for every commitment; one a participant sent itself while
        the others were being aggregated makes the contract refuse, and the aggregator
        collects again (a few times: a participant cannot hold the round up for long,
        its commitments stop at the deadline)."""
        round_number = ticket.round
        base = protocol.load_model(self.federation.store, ticket.base)
        for attempt in range(1, COLLECTIONS + 1):
            self.progress.stage(round_number, "collecting updates by their on-chain CIDs")
            with stopwatch("collect"):
                collected = protocol.collect(self.federation, self.aggregator.x25519_private, round_number, base,
                                             stopwatch=stopwatch)
            self.progress.stage(round_number, f"aggregating {len(collected.updates)} updates")
            with stopwatch("aggregate"):
                _, global_model = protocol.aggregate(self.federation, round_number, collected)
            self._checkpoint(round_number, "stored")
            self.progress.stage(round_number, "finalizing on chain")
            try:
                with stopwatch("finalize"):
                    protocol.finalize(self.federation, self.aggregator, round_number, global_model,
                                      collected.included, collected.exclusions)
            except TransactionReverted as refusal:
                if refusal.error != "CommitmentsUnaccounted" or attempt == COLLECTIONS:
                    raise
                self.progress.note(f"round {round_number}: a commitment arrived while aggregating; collecting again")
                continue
            for exclusion in collected.exclusions:
                self._exclude(exclusion.participant, exclusion.reason)
            self._checkpoint(round_number, "finalized")
            return

    def _attest_and_evaluate(self, grid: Grid, round_number: int, global_model: Cid) -> tuple[int, MetricRecord | None]:
        """One message round: seeded-sampled validators re-compute and attest while every
        participant evaluates the finalized model; more validators are asked if some fail.
        Validators that already attested (before a resume) are not asked again."""
        rng = random.Random(f"{self.settings.seed}/attest/{round_number}")
        order = [address for address in rng.sample(self.validators, len(self.validators))
                 if not self.ledger.has_attested(round_number, address)]
        state = self.ledger.round(round_number)
        needed = 0 if state.status == RoundStatus.ACCEPTED else self.plan.attestation_threshold - state.attestations
        attest_config = ConfigRecord({"round": round_number})
        inputs = [state.base, *(record.cid for record in self.ledger.commitments(round_number)), global_model]
        messages = [self._message(a, MessageType.QUERY + ".attest", attest_config, inputs) for a in order[:needed]]
        evaluate_config = ConfigRecord({"round": round_number, "model": str(global_model)})
        messages += self.configure_evaluate(round_number, ArrayRecord(), evaluate_config, grid)
        replies = list(grid.send_and_receive(messages, timeout=self.plan.reply_timeout))
        attestations = [r for r in replies if r.metadata.message_type.startswith(MessageType.QUERY)]
        evaluations = [r for r in replies if r.metadata.message_type == MessageType.EVALUATE]
        evaluation = self.aggregate_evaluate(round_number, evaluations)
        gas, asked = self._count_attestations(round_number, attestations), needed
        while self.ledger.round(round_number).status != RoundStatus.ACCEPTED:
            missing = self.plan.attestation_threshold - self.ledger.round(round_number).attestations
            batch, asked = order[asked: asked + missing], asked + missing
            if not batch:
                raise ProtocolError(f"round {round_number}: too few validators attested {global_model}")
            retry = [self._message(address, MessageType.QUERY + ".attest", attest_config, inputs) for address in batch]
            gas += self._count_attestations(round_number, grid.send_and_receive(retry, timeout=self.plan.reply_timeout))
        return gas, evaluation

    def _count_attestations(self, round_number: int, replies: Iterable[Message]) -> int:
        gas = 0
        for reply in self._successful(replies, f"round {round_number}: a validator failed"):
            gas += int(reply.content["metrics"]["gas"])
            self._note(reply, **{key: float(value) for key, value in reply.content["metrics"].items()})
        return gas

    # ------------------------------------------------------------ Flower's strategy hooks

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return [self._message(address, MessageType.TRAIN, config) for address in self._sample(server_round)]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Unused: aggregation reads the chain, not the replies (see `_conclude`)."""
        return None, None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        carried = [Cid.parse(str(config["model"]))] if "model" in config else []
        return [self._message(address, MessageType.EVALUATE, config, carried) for address in self.nodes]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        results = []
        for reply in self._successful(replies, f"round {server_round}: an evaluation failed"):
            metrics = reply.content["metrics"]
            results.append((float(metrics["loss"]), float(metrics["accuracy"]), int(metrics["examples"])))
            self._note(reply, accuracy=float(metrics["accuracy"]),
                       seconds_evaluate=float(metrics["seconds_evaluate"]))
        total = sum(examples for _, _, examples in results)
        if not total:
            return None
        return MetricRecord({
            "loss": sum(loss * n for loss, _, n in results) / total,
            "accuracy": sum(accuracy * n for _, accuracy, n in results) / total,
            "examples": total,
        })

    def summary(self) -> None:
        """Flower calls this to log the strategy; the run's summary.json says more."""

    # ------------------------------------------------------------ helpers

    def _greet(self, grid: Grid) -> None:
        """Learns which node is which participant, and checks each is a member on chain.

        Starting takes longer than a round's reply (processes start, data loads), so the
        greeting waits at least `GREETING_TIMEOUT`; every participant must answer."""
        expected = self.settings.num_participants
        timeout = max(self.plan.reply_timeout, GREETING_TIMEOUT)
        deadline = time.monotonic() + timeout
        while len(list(grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise ProtocolError(f"only {len(list(grid.get_node_ids()))} of {expected} participants connected")
            time.sleep(0.1)
        hello = ConfigRecord({"settings": self.settings.to_json()})
        summaries: dict[str, TableSummary] = {}
        messages = [Message(RecordDict({"config": hello}), dst_node_id=node, message_type=MessageType.QUERY + ".hello")
                    for node in grid.get_node_ids()]
        for reply in grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                raise ProtocolError(f"a participant could not start: {_last_line(reply.error.reason)}")
            address = str(reply.content["identity"]["address"])
            member = self.federation.ledger.member(address)
            if not member.active:
                raise ProtocolError(f"node {reply.metadata.src_node_id} speaks for {address}, which is not a member")
            self.nodes[address] = reply.metadata.src_node_id
            self._addresses[reply.metadata.src_node_id] = address
            if "data" in reply.content:
                summaries[address] = TableSummary.from_json(str(reply.content["data"].get("summary")), address)
        if len(self.nodes) < expected:
            raise ProtocolError(f"only {len(self.nodes)} of {expected} participants answered within {timeout:g} s")
        if summaries:
            self._agree_on_preprocessing(summaries)
        aggregator = self.federation.ledger.aggregator()
        self.validators = sorted(
            (m.address for m in self.federation.ledger.members()
             if m.active and m.address in self.nodes and m.address != aggregator and Role.VALIDATOR in m.roles),
            key=lambda address: int(address, 16),
        )

    def _agree_on_preprocessing(self, summaries: dict[str, TableSummary]) -> None:
        """Deployed sites each hold their own table: combine what they said of it into the
        features, classes and standardization all of them apply (sent with the settings)."""
        missing = sorted(set(self.nodes) - set(summaries))
        if missing:
            raise ProtocolError(f"participants {missing} did not describe their data, the others did")
        shared = SharedPreprocessing.combine(dict(sorted(summaries.items())))
        self.settings = dataclasses.replace(self.settings, preprocessing=shared.to_dict())
        self.progress.note(f"{len(summaries)} sites agreed on {len(shared.feature_names)} features and "
                           f"{len(shared.classes)} classes, scaled with federated statistics")

    def _successful(self, replies: Iterable[Message], failure: str) -> Iterator[Message]:
        """Replies that carry results; a failed one is reported and skipped, not fatal."""
        for reply in replies:
            if reply.has_error():
                self.progress.note(f"{failure}: {_last_line(reply.error.reason)}")
            else:
                yield reply

    def _sample(self, round_number: int) -> list[str]:
        """The participants asked to train in a round: seeded, over addresses, the same in every attempt."""
        addresses = sorted(self.nodes, key=lambda address: int(address, 16))
        count = max(self.plan.quorum, round(len(addresses) * self.plan.fraction_train))
        return random.Random(f"{self.settings.seed}/train/{round_number}").sample(addresses, min(count, len(addresses)))

    def _message(self, address: str, message_type: str, config: ConfigRecord,
                 carried: Iterable[Cid | None] = ()) -> Message:
        """A request to one participant; with `ship_blobs` it carries the blobs of `carried`."""
        records: dict[str, ConfigRecord] = {"config": ConfigRecord({**config, "settings": self.settings.to_json()})}
        if self.plan.ship_blobs and (wanted := [cid for cid in carried if cid is not None]):
            records[blobs.RECORD] = blobs.pack(self.federation.store, wanted)
        return Message(RecordDict(records), dst_node_id=self.nodes[address], message_type=message_type)

    def _receipts(self, replies: Iterable[Message], attempt: int) -> list[SignedCommitment]:
        receipts = []
        for reply in replies:
            if reply.has_error():
                address = self._addresses[reply.metadata.src_node_id]
                self._exclude(address, f"attempt {attempt}: failed to train: {_last_line(reply.error.reason)}")
                continue
            receipt = reply.content["receipt"]
            participant = str(receipt["participant"])
            commitment = Commitment(participant, int(receipt["round"]), int(receipt["attempt"]),
                                    Cid.parse(str(receipt["cid"])), int(receipt["examples"]))
            if self.plan.ship_blobs:  # the sealed update, into our store under the CID it hashes to
                try:
                    record = reply.content.get(blobs.RECORD)
                    carried = blobs.unpack(self.federation.store, record) if record is not None else []
                except FlChainError as refused:  # one participant's bad blob must not stop the round
                    self._exclude(participant, f"attempt {attempt}: {refused}")
                    continue
                if commitment.cid not in carried:
                    self._exclude(participant, f"attempt {attempt}: its reply lacks the blob of {commitment.cid}")
                    continue
            receipts.append(SignedCommitment(commitment, bytes.fromhex(str(receipt["r"])), bytes.fromhex(str(receipt["vs"]))))
            self._note(reply, **{key: float(value) for key, value in reply.content["metrics"].items()})
        return receipts

    def _exclude(self, participant: str, reason: str) -> None:
        """Records why a participant's update is not in the round (summary, metrics, terminal)."""
        self._exclusions.append((participant, reason))
        self.progress.note(f"excluded {participant}: {reason}")

    def _chain_time(self) -> int:
        """Now, as the chain's next block will see it (never behind the latest block)."""
        return max(int(self.ledger.chain.web3.eth.get_block("latest")["timestamp"]), int(time.time()))

    def _checkpoint(self, round_number: int, point: str) -> None:
        if self.drill is not None:
            self.drill.check(round_number, point, self.progress)

    def _note(self, reply: Message, **metrics: float) -> None:
        """Keeps a participant's figures of this round, from whichever reply carried them."""
        address = self._addresses[reply.metadata.src_node_id]
        self._participant_metrics.setdefault(address, {}).update(metrics)

    def _record_participants(self, round_number: int) -> None:
        """One metrics.csv row per participant: training loss, test accuracy, bytes, gas,
        seconds, and why its update was left out if it was."""
        excluded: dict[str, list[str]] = {}
        for participant, reason in self._exclusions:
            excluded.setdefault(participant, []).append(reason)
        for participant in sorted(self._participant_metrics.keys() | excluded.keys(), key=lambda address: int(address, 16)):
            metrics = self._participant_metrics.get(participant, {})
            seconds = {key.removeprefix("seconds_"): value for key, value in metrics.items() if key.startswith("seconds_")}
            self.runlog.participant(
                round_number, participant, seconds, loss=metrics.get("loss"), accuracy=metrics.get("accuracy"),
                examples=int(metrics["examples"]) if "examples" in metrics else None,
                bytes=int(metrics["bytes"]) if "bytes" in metrics else None,
                gas=int(metrics["gas"]) if "gas" in metrics else None,
                excluded="; ".join(excluded.get(participant, [])) or None,
            )


def _last_line(reason: str) -> str:
    """What went wrong, without the transport's traceback: Flower's simulation wraps a
    ClientApp's exception in Ray's, ending in `Message: <the error>'>`."""
    message = reason.rpartition("Message: ")[2] if "Message: " in reason else reason
    lines = [line.strip() for line in message.strip().rstrip("'>").splitlines() if line.strip()]
    return lines[-1] if lines else reason.strip()
