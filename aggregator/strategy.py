"""The on-chain strategy: FedAvg (or FedProx) whose every round goes through the contract.

FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data". FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous
Networks" (the proximal term lives in the participants' local training).

Flower's base `Strategy.start` runs train then evaluate; a round here has more steps, so
`start` is overridden to run them in protocol order:

    open on chain -> train (participants commit) -> relay receipts -> collect by on-chain
    CIDs -> aggregate -> finalize -> validators re-compute and attest -> evaluate

The Flower replies only carry receipts: the updates aggregated are those the chain says
were committed. Sampling is seeded and done over participant addresses (Flower's node ids
are random), and aggregation is in address order, so a run replays exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from clients.settings import RunSettings
from fl_chain import protocol
from fl_chain.chain.commitment import Commitment, SignedCommitment
from fl_chain.chain.federation import Role, RoundStatus
from fl_chain.identity import Identity
from fl_chain.progress import Progress
from fl_chain.protocol import Exclusion, Federation, ProtocolError, RoundTicket
from fl_chain.runlog import RoundSummary, RunLog
from fl_chain.storage.cid import Cid
from fl_chain.timing import Stopwatch


@dataclass(frozen=True)
class RoundPlan:
    rounds: int
    quorum: int
    fraction_train: float
    attestation_threshold: int
    reply_timeout: float


class OnChainStrategy(Strategy):
    """Drives rounds through the Federation contract; the aggregator is trusted for nothing."""

    def __init__(
        self,
        federation: Federation,
        aggregator: Identity,
        settings: RunSettings,
        plan: RoundPlan,
        runlog: RunLog,
        progress: Progress,
    ) -> None:
        self.federation = federation
        self.aggregator = aggregator
        self.settings = settings
        self.plan = plan
        self.runlog = runlog
        self.progress = progress
        self.nodes: dict[str, int] = {}  # participant address -> Flower node id
        self._addresses: dict[int, str] = {}  # and back
        self.validators: list[str] = []
        self._ticket: RoundTicket | None = None
        self._exclusions: list[Exclusion] = []
        self._participant_metrics: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------ the round loop

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 0,
              timeout: float = 0, **_unused: object) -> Result:
        self._greet(grid)
        for round_number in range(1, self.plan.rounds + 1):
            self._run_round(grid, round_number)
        return Result()

    def _run_round(self, grid: Grid, round_number: int) -> None:
        stopwatch = Stopwatch()
        gas_before = self.federation.ledger.chain.gas_used
        self._exclusions, self._participant_metrics = [], {}
        with stopwatch("total"):
            self.progress.stage(round_number, "opening on chain")
            with stopwatch("open_round"):
                self._ticket = protocol.open_round(self.federation, self.aggregator, round_number)
            self.progress.stage(round_number, "training")
            replies = grid.send_and_receive(
                self.configure_train(round_number, ArrayRecord(), self._ticket_config(), grid),
                timeout=self.plan.reply_timeout,
            )
            global_model, included, commitments = self._conclude(round_number, replies, stopwatch)
            self.progress.stage(round_number, "validators attesting, participants evaluating")
            with stopwatch("attest_evaluate"):
                attest_gas, evaluation = self._attest_and_evaluate(grid, round_number, global_model)
        accuracy = float(evaluation["accuracy"]) if evaluation else None
        loss = float(evaluation["loss"]) if evaluation else None
        summary = RoundSummary(
            round=round_number,
            global_cid=str(global_model),
            accepted=self.federation.ledger.round(round_number).status == RoundStatus.ACCEPTED,
            commitments=commitments,
            included=len(included),
            accuracy=accuracy,
            loss=loss,
            gas_used=self.federation.ledger.chain.gas_used - gas_before + attest_gas,
            seconds=round(stopwatch.seconds["total"], 3),
            exclusions=[{"participant": e.participant, "reason": e.reason} for e in self._exclusions],
        )
        self._record_participants(round_number)
        self.runlog.round(summary, stopwatch.seconds)
        shown = f"accuracy {accuracy:.4f}" if accuracy is not None else "no evaluation"
        self.progress.done(round_number, f"{len(included)}/{commitments} updates, model {str(global_model)[:16]}…, "
                                         f"accepted, {shown}")

    def _conclude(self, round_number: int, replies: Iterable[Message], stopwatch: Stopwatch) -> tuple[Cid, list[str], int]:
        """Relay, collect, aggregate and finalize: the aggregator's half of the round."""
        receipts = self._receipts(replies)
        self.progress.stage(round_number, f"relaying {len(receipts)} commitments")
        with stopwatch("relay"):
            outcome = protocol.relay(self.federation, self.aggregator, receipts)
        if outcome is not None:
            self._exclusions += [Exclusion(p, reason.explain(p, round_number)) for p, reason in outcome.refused]
        committed = len(self.federation.ledger.commitments(round_number))
        if committed < self.plan.quorum:
            raise ProtocolError(f"round {round_number} has {committed} commitments, below the quorum of {self.plan.quorum}")
        self.progress.stage(round_number, "collecting updates by their on-chain CIDs")
        with stopwatch("collect"):
            base = protocol.load_model(self.federation.store, self._ticket.base)  # type: ignore[union-attr]
            collected = protocol.collect(self.federation, self.aggregator.x25519_private, round_number, base,
                                         stopwatch=stopwatch)
        self._exclusions += list(collected.exclusions)
        self.progress.stage(round_number, f"aggregating {len(collected.updates)} updates")
        with stopwatch("aggregate"):
            _, global_model = protocol.aggregate(self.federation, round_number, collected)
        self.progress.stage(round_number, "finalizing on chain")
        with stopwatch("finalize"):
            protocol.finalize(self.federation, self.aggregator, round_number, global_model, collected.included)
        return global_model, collected.included, committed

    def _attest_and_evaluate(self, grid: Grid, round_number: int, global_model: Cid) -> tuple[int, MetricRecord | None]:
        """One message round: seeded-sampled validators re-compute and attest while every
        participant evaluates the finalized model; more validators are asked if some fail."""
        rng = random.Random(f"{self.settings.seed}/attest/{round_number}")
        order = rng.sample(self.validators, len(self.validators))
        needed = self.plan.attestation_threshold
        attest_config = ConfigRecord({"round": round_number})
        messages = [self._message(a, MessageType.QUERY + ".attest", attest_config) for a in order[:needed]]
        evaluate_config = ConfigRecord({"round": round_number, "model": str(global_model)})
        messages += self.configure_evaluate(round_number, ArrayRecord(), evaluate_config, grid)
        replies = list(grid.send_and_receive(messages, timeout=self.plan.reply_timeout))
        attestations = [r for r in replies if r.metadata.message_type.startswith(MessageType.QUERY)]
        evaluations = [r for r in replies if r.metadata.message_type == MessageType.EVALUATE]
        evaluation = self.aggregate_evaluate(round_number, evaluations)
        gas, asked = self._count_attestations(round_number, attestations), needed
        while self.federation.ledger.round(round_number).status != RoundStatus.ACCEPTED:
            missing = self.plan.attestation_threshold - self.federation.ledger.round(round_number).attestations
            batch, asked = order[asked: asked + missing], asked + missing
            if not batch:
                raise ProtocolError(f"round {round_number}: too few validators attested {global_model}")
            retry = [self._message(address, MessageType.QUERY + ".attest", attest_config) for address in batch]
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
        addresses = sorted(self.nodes, key=lambda address: int(address, 16))
        count = max(self.plan.quorum, round(len(addresses) * self.plan.fraction_train))
        sampled = random.Random(f"{self.settings.seed}/train/{server_round}").sample(addresses, min(count, len(addresses)))
        return [self._message(address, MessageType.TRAIN, config) for address in sampled]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Unused: aggregation reads the chain, not the replies (see `_conclude`)."""
        return None, None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return [self._message(address, MessageType.EVALUATE, config) for address in self.nodes]

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
        """Learns which node is which participant, and checks each is a member on chain."""
        expected = self.settings.num_participants
        deadline = time.monotonic() + self.plan.reply_timeout
        while len(list(grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise ProtocolError(f"only {len(list(grid.get_node_ids()))} of {expected} participants connected")
            time.sleep(0.1)
        hello = ConfigRecord({"settings": self.settings.to_json()})
        messages = [Message(RecordDict({"config": hello}), dst_node_id=node, message_type=MessageType.QUERY + ".hello")
                    for node in grid.get_node_ids()]
        for reply in grid.send_and_receive(messages, timeout=self.plan.reply_timeout):
            if reply.has_error():
                raise ProtocolError(f"a participant could not start: {reply.error.reason}")
            address = str(reply.content["identity"]["address"])
            member = self.federation.ledger.member(address)
            if not member.active:
                raise ProtocolError(f"node {reply.metadata.src_node_id} speaks for {address}, which is not a member")
            self.nodes[address] = reply.metadata.src_node_id
            self._addresses[reply.metadata.src_node_id] = address
        aggregator = self.federation.ledger.aggregator()
        self.validators = sorted(
            (m.address for m in self.federation.ledger.members()
             if m.active and m.address in self.nodes and m.address != aggregator and Role.VALIDATOR in m.roles),
            key=lambda address: int(address, 16),
        )

    def _successful(self, replies: Iterable[Message], failure: str) -> Iterator[Message]:
        """Replies that carry results; a failed one is reported and skipped, not fatal."""
        for reply in replies:
            if reply.has_error():
                self.progress.note(f"{failure}: {reply.error.reason}")
            else:
                yield reply

    def _message(self, address: str, message_type: str, config: ConfigRecord) -> Message:
        content = ConfigRecord({**config, "settings": self.settings.to_json()})
        return Message(RecordDict({"config": content}), dst_node_id=self.nodes[address], message_type=message_type)

    def _ticket_config(self) -> ConfigRecord:
        ticket = self._ticket
        assert ticket is not None
        return ConfigRecord({"round": ticket.round, "attempt": ticket.attempt, "base": str(ticket.base),
                             "deadline": ticket.deadline})

    def _receipts(self, replies: Iterable[Message]) -> list[SignedCommitment]:
        receipts = []
        for reply in self._successful(replies, "a participant failed to train"):
            receipt = reply.content["receipt"]
            participant = str(receipt["participant"])
            commitment = Commitment(participant, int(receipt["round"]), int(receipt["attempt"]),
                                    Cid.parse(str(receipt["cid"])), int(receipt["examples"]))
            receipts.append(SignedCommitment(commitment, bytes.fromhex(str(receipt["r"])), bytes.fromhex(str(receipt["vs"]))))
            self._note(reply, **{key: float(value) for key, value in reply.content["metrics"].items()})
        return receipts

    def _note(self, reply: Message, **metrics: float) -> None:
        """Keeps a participant's figures of this round, from whichever reply carried them."""
        address = self._addresses[reply.metadata.src_node_id]
        self._participant_metrics.setdefault(address, {}).update(metrics)

    def _record_participants(self, round_number: int) -> None:
        """One metrics.csv row per participant: training loss, test accuracy, bytes, gas, seconds."""
        for participant in sorted(self._participant_metrics, key=lambda address: int(address, 16)):
            metrics = self._participant_metrics[participant]
            seconds = {key.removeprefix("seconds_"): value for key, value in metrics.items() if key.startswith("seconds_")}
            self.runlog.participant(
                round_number, participant, seconds, loss=metrics.get("loss"), accuracy=metrics.get("accuracy"),
                examples=int(metrics["examples"]) if "examples" in metrics else None,
                bytes=int(metrics["bytes"]) if "bytes" in metrics else None,
                gas=int(metrics["gas"]) if "gas" in metrics else None,
            )
