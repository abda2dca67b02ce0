"""The round as one object: the aggregator's state machine, from the chain's state, over a transport.

    open -> ask to train -> relay -> (quorum missed: fail after the deadline, reopen)
         -> collect by on-chain CIDs -> aggregate -> finalize (or fail below the quorum)
         -> committee attests while everyone evaluates -> accepted
            (a dissent or missing attestations: fail the attempt, reopen)

Every step starts from what the chain says, so a coordinator started on a half-done round
(`flchain resume`) finishes it, and no participant, validator or message can wedge it:
whatever goes wrong with an attempt ends in that attempt failing on chain and the next one
opening, up to `max_attempts` failures in a row, after which the run stops resumably.

Nothing a participant sends is trusted. A reply that is missing, late, malformed, for
another round, signed by someone else or claiming too many examples excludes its sender
with a reason; the updates aggregated are those the chain says were committed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fl_chain import protocol
from fl_chain.chain.federation import ExclusionReason, Role, RoundState, RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import printable
from fl_chain.identity import Identity
from fl_chain.messages import (
    AttestationReport,
    Evaluation,
    MalformedMessage,
    Receipt,
    Ticket,
    read_float,
    weighted_metrics,
)
from fl_chain.outliers import Screening, UpdateScore
from fl_chain.progress import Progress
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.runlog import RoundSummary, RunLog, shown_figures
from fl_chain.storage.cid import Cid
from fl_chain.timing import Stopwatch
from fl_chain.transport import ATTEST, EVALUATE, TRAIN, Reply, Request, Transport

Checkpoint = Callable[[int, str], None]  # (round, point): the kill drill's hook (aggregator/drill.py)
OWN_FIGURES = ("loss", "examples", "bytes", "gas")  # what a reply's unsigned metrics may say, besides seconds


@dataclass(frozen=True)
class RoundPlan:
    rounds: int
    quorum: int
    fraction_train: float
    reply_timeout: float
    seed: int
    max_attempts: int = 3
    # the chain is the run's own development chain: move its clock past a deadline
    # instead of waiting for it (a simulation has nobody else to wait for)
    fast_forward: bool = False


class RoundCoordinator:
    """Drives rounds through the Federation contract; the aggregator is trusted for nothing."""

    def __init__(self, federation: Federation, aggregator: Identity, plan: RoundPlan, transport: Transport,
                 runlog: RunLog, progress: Progress, checkpoint: Checkpoint | None = None) -> None:
        self.federation = federation
        self.aggregator = aggregator
        self.plan = plan
        self.transport = transport
        self.runlog = runlog
        self.progress = progress
        self.checkpoint = checkpoint or (lambda _round, _point: None)
        self._exclusions: list[tuple[str, str]] = []
        self._scores: dict[str, UpdateScore] = {}  # the outlier test's, of each valid update of the round
        self._metrics: dict[str, dict[str, float]] = {}  # each participant's own figures
        self._signed: dict[str, dict[str, float]] = {}  # each participant's signed evaluation
        self._evaluations: list[Evaluation] = []
        self._attest_gas = 0
        self.seconds: dict[str, float] = {}  # what the last round spent, stage by stage: seconds
        self.gas: dict[str, int] = {}  # and gas, of the transactions this process sent

    @property
    def ledger(self) -> Ledger:
        return self.federation.ledger

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        first = len(self.runlog.rounds) + 1
        accepted, _ = self.ledger.latest_accepted()
        if accepted > first:
            raise ProtocolError(f"the chain has {accepted} accepted rounds but the run directory records only "
                                f"{first - 1}: it belongs to another run of this federation")
        if first > 1:
            done = "round 1 is" if first == 2 else f"rounds 1-{first - 1} are"
            self.progress.note(f"resuming at round {first}: {done} accepted on chain")
        for round_number in range(first, self.plan.rounds + 1):
            self.run_round(round_number)

    def run_round(self, round_number: int) -> None:
        stopwatch = Stopwatch()
        gas_before = self.ledger.chain.gas_used
        self._exclusions, self._metrics, self._signed, self._evaluations, self._attest_gas = [], {}, {}, [], 0
        self._scores = {}
        self.gas = {}
        resumed = self.ledger.round(round_number).status != RoundStatus.NONE
        with stopwatch("total"):
            state = self._settle(round_number, stopwatch)
        assert state.global_model is not None
        evaluation = weighted_metrics(self._evaluations)
        summary = RoundSummary(
            round=round_number,
            global_cid=str(state.global_model),
            accepted=True,
            commitments=state.commitments,
            included=state.included,
            metrics=evaluation,
            gas_used=self.ledger.chain.gas_used - gas_before + self._attest_gas,
            seconds=round(stopwatch.seconds["total"], 3),
            exclusions=[{"participant": participant, "reason": reason} for participant, reason in self._exclusions],
            attempt=state.attempt,
            resumed=resumed,
            outliers=self._outliers_on_chain(round_number),
        )
        self._record_participants(round_number)
        self.runlog.evaluations(self._evaluations)
        self.runlog.round(summary, stopwatch.seconds)
        self.seconds = dict(stopwatch.seconds)
        shown = shown_figures(evaluation)
        retried = f", attempt {state.attempt}" if state.attempt > 1 else ""
        self.progress.done(round_number, f"{state.included}/{state.commitments} updates, model "
                                         f"{str(state.global_model)[:16]}…, accepted{retried}, {shown}")

    def _settle(self, round_number: int, stopwatch: Stopwatch) -> RoundState:
        """Takes the round from whatever state the chain has it in to accepted; each attempt
        that cannot succeed is failed on chain and the round reopens."""
        failures = 0
        while True:
            state = self.ledger.round(round_number)
            if state.status == RoundStatus.ACCEPTED:
                return state
            if state.status in (RoundStatus.NONE, RoundStatus.FAILED):
                if failures >= self.plan.max_attempts:
                    raise ProtocolError(f"round {round_number} failed {failures} attempts in a row (max_attempts "
                                        f"{self.plan.max_attempts})")
                self.progress.stage(round_number, "opening on chain")
                with self._stage(stopwatch, "open_round"):
                    protocol.open_round(self.federation, self.aggregator, round_number)
                self.checkpoint(round_number, "opened")
                continue
            if state.status == RoundStatus.OPEN:
                if not self._commit_stage(state, stopwatch):
                    failures += 1
                continue
            if not self._attest_stage(state, stopwatch):  # finalized: attest, or fail the attempt
                failures += 1

    # ------------------------------------------------------------ open -> finalized

    def _commit_stage(self, state: RoundState, stopwatch: Stopwatch) -> bool:
        """Gathers, relays, collects, aggregates and finalizes an open attempt; False when
        the attempt failed (below the quorum of commitments, or of valid updates)."""
        assert state.base is not None
        ticket = Ticket(state.round, state.attempt, state.base, state.deadline)
        self._gather(ticket, stopwatch)
        self.checkpoint(ticket.round, "relayed")
        self._await_commit_grace(ticket)
        committed = self.ledger.round(ticket.round).commitments
        if committed < self.plan.quorum:
            self.progress.note(f"round {ticket.round} attempt {ticket.attempt}: {committed} commitments, below the "
                               f"quorum of {self.plan.quorum}; failing it on chain and retrying")
            self._wait_until(ticket.deadline, ticket.round, "its deadline")
            self.ledger.fail_round(self.aggregator.account, ticket.round)
            return False
        return self._conclude(ticket, stopwatch)

    def _await_commit_grace(self, ticket: Ticket) -> None:
        """Unless every participant has committed, participants the aggregator could not
        relay may still commit themselves until the commit grace ends: wait for it (the
        contract would refuse to finalize before it anyway)."""
        parameters = self.ledger.parameters()
        participants = sum(m.active and Role.PARTICIPANT in m.roles for m in self.ledger.members())
        if parameters.commit_grace and self.ledger.round(ticket.round).commitments < participants:
            self._wait_until(ticket.deadline - parameters.round_duration + parameters.commit_grace - 1, ticket.round,
                             "the commit grace")

    def _gather(self, ticket: Ticket, stopwatch: Stopwatch) -> None:
        """Asks the sampled participants that have not committed yet to train, checks each
        receipt against the ticket and its sender, and relays the good ones that the chain
        does not hold yet (a participant may have committed itself meanwhile)."""
        committed = set(self.ledger.committed(ticket.round))
        asked = [address for address in self._sample(ticket.round) if address not in committed]
        if not asked:
            return
        if self._chain_time() > ticket.deadline:
            self.progress.note(f"round {ticket.round} attempt {ticket.attempt}: its deadline has passed, "
                               "no more commitments can be accepted")
            return
        self.progress.stage(ticket.round, "training")
        requests = [Request(address, TRAIN, ticket.to_record(), (ticket.base,)) for address in asked]
        replies = self.transport.send(requests, self.plan.reply_timeout)
        caps = self._example_caps()
        receipts = [receipt for reply in replies if (receipt := self._receipt(reply, ticket, caps)) is not None]
        committed = set(self.ledger.committed(ticket.round))
        fresh = [receipt.signed for receipt in receipts if receipt.commitment.participant not in committed]
        self.progress.stage(ticket.round, f"relaying {len(fresh)} commitments")
        with self._stage(stopwatch, "relay"):
            outcome = protocol.relay(self.federation, self.aggregator, fresh)
        if outcome is not None:
            for participant, reason in outcome.refused:
                self._exclude(participant, reason.explain(participant, ticket.round))

    def _receipt(self, reply: Reply, ticket: Ticket, caps: dict[str, int]) -> Receipt | None:
        """The receipt a reply carries, or None after noting why its sender is left out."""
        where = f"attempt {ticket.attempt}"
        if not reply.ok:
            self._exclude(reply.participant, f"{where}: {reply.error}")
            return None
        try:
            receipt = Receipt.from_record(reply.content.get("receipt"), ticket=ticket, sender=reply.participant,
                                          chain_id=self.federation.chain_id, federation=self.federation.address,
                                          example_cap=caps.get(reply.participant, 0))
        except MalformedMessage as malformed:
            self._exclude(reply.participant, f"{where}: {malformed}")
            return None
        self._note_metrics(reply.participant, reply.content.get("metrics"))
        return receipt

    def _conclude(self, ticket: Ticket, stopwatch: Stopwatch) -> bool:
        """Collect, aggregate and finalize: the aggregator's half of the round, from the
        chain. What it read is accounted for; a commitment landing after the read is the
        contract's to exclude as late, so this always converges."""
        round_number = ticket.round
        rules = protocol.UpdateRules.for_round(self.federation, round_number)
        self.progress.stage(round_number, "collecting updates by their on-chain CIDs")
        with self._stage(stopwatch, "collect"):
            collected = self.collect(round_number, rules, stopwatch)
        for exclusion in collected.exclusions:
            self._exclude(exclusion.participant, exclusion.reason)
        if len(collected.updates) < self.plan.quorum:
            self.progress.note(f"round {round_number} attempt {ticket.attempt}: {len(collected.updates)} valid "
                               f"updates, below the quorum of {self.plan.quorum}; failing it on chain and retrying")
            # the contract records no model for a failing attempt: the base stands in for one
            protocol.finalize(self.federation, self.aggregator, round_number, ticket.base, collected)
            return False
        with self._stage(stopwatch, "aggregate"):
            screened, screening = self.screen(round_number, collected, rules.base)
        self._scores = {score.participant: score for score in screening.scores}
        for exclusion in screened.exclusions[len(collected.exclusions):]:
            self._exclude(exclusion.participant, exclusion.reason)
        collected = screened
        self.progress.stage(round_number, f"aggregating {len(collected.updates)} updates")
        with self._stage(stopwatch, "aggregate"):
            _, global_model = protocol.aggregate(self.federation, round_number, collected, rules.base)
        self.checkpoint(round_number, "stored")
        self.progress.stage(round_number, "finalizing on chain")
        with self._stage(stopwatch, "finalize"):
            status = protocol.finalize(self.federation, self.aggregator, round_number, global_model, collected)
        for participant, reason in self.ledger.exclusions(round_number):
            if reason == ExclusionReason.LATE:
                self._exclude(participant, reason.explain(participant, round_number))
        self.checkpoint(round_number, "finalized")
        return status == RoundStatus.FINALIZED

    def collect(self, round_number: int, rules: protocol.UpdateRules, stopwatch: Stopwatch) -> protocol.CollectedUpdates:
        """The updates the chain says were committed, each opened and judged (or excluded
        with its reason): what the round aggregates and the contract accounts for."""
        return protocol.collect(self.federation, self.aggregator.x25519_private, round_number, rules,
                                stopwatch=stopwatch)

    def _outliers_on_chain(self, round_number: int) -> list[str]:
        """Whose updates the accepted attempt excluded as outliers, as the chain records it
        (an earlier failed attempt's, or a resumed run's, would otherwise be misreported)."""
        return sorted((who for who, reason in self.ledger.exclusions(round_number) if reason == ExclusionReason.OUTLIER),
                      key=lambda address: int(address, 16))

    def screen(self, round_number: int, collected: protocol.CollectedUpdates,
               base: protocol.Tensors) -> tuple[protocol.CollectedUpdates, Screening]:
        """The federation's outlier test over the valid updates: the flagged ones become
        exclusions with the outlier reason (validators re-run the same test and dissent
        from any other verdict)."""
        return protocol.screen_outliers(self.federation, round_number, collected, base)

    # ------------------------------------------------------------ finalized -> accepted

    def _attest_stage(self, state: RoundState, stopwatch: Stopwatch) -> bool:
        """The committee re-judges and attests while every participant evaluates the model;
        False when the attempt had to be failed (a dissent, or too few attestations in time)."""
        round_number = state.round
        assert state.global_model is not None
        self.progress.stage(round_number, "validators attesting, participants evaluating")
        with self._stage(stopwatch, "attest_evaluate"):
            pending = self._pending_committee(round_number)
            requests = [Request(v, ATTEST, {"round": round_number}, self._attest_inputs(state)) for v in pending]
            evaluate = {"round": round_number, "model": str(state.global_model)}
            requests += [Request(p, EVALUATE, evaluate, (state.global_model,)) for p in self._participants()]
            caps = self._example_caps()
            self._read_replies(self.transport.send(requests, self.plan.reply_timeout), state.global_model, caps)
            state = self.ledger.round(round_number)
            if state.status == RoundStatus.FINALIZED and state.dissents == 0 and (again := self._pending_committee(
                    round_number)):  # a validator that failed once gets one more chance
                retry = [Request(v, ATTEST, {"round": round_number}, self._attest_inputs(state)) for v in again]
                self._read_replies(self.transport.send(retry, self.plan.reply_timeout), state.global_model, caps)
                state = self.ledger.round(round_number)
        if state.status == RoundStatus.ACCEPTED:
            return True
        if state.dissents:
            self.progress.note(f"round {round_number} attempt {state.attempt}: {state.dissents} committee "
                               "validator(s) dissent from the finalized model; failing it on chain and retrying")
        else:
            self.progress.note(f"round {round_number} attempt {state.attempt}: {state.attestations} of the "
                               "attestations needed arrived; failing it once its attestation window closes")
            self._wait_until(state.deadline + self.ledger.parameters().round_duration, round_number,
                             "its attestation window")
        self.ledger.fail_round(self.aggregator.account, round_number)
        return False

    def _pending_committee(self, round_number: int) -> list[str]:
        """Committee members this transport reaches that have not attested yet."""
        return [address for address in self._validators()
                if self.ledger.is_on_committee(round_number, address)
                and not self.ledger.has_attested(round_number, address)]

    def _attest_inputs(self, state: RoundState) -> tuple[Cid, ...]:
        return (*((state.base,) if state.base else ()),
                *(record.cid for record in self.ledger.commitments(state.round)),
                *((state.global_model,) if state.global_model else ()))

    def _read_replies(self, replies: Iterable[Reply], model: Cid, caps: dict[str, int]) -> None:
        for reply in replies:
            if not reply.ok:
                self.progress.note(f"round: {reply.kind} by {reply.participant} failed: {reply.error}")
                continue
            if reply.kind == ATTEST:
                metrics = self._note_metrics(reply.participant, reply.content.get("metrics"))
                self._attest_gas += int(metrics.get("gas", 0))
                self._note_attestation(reply)
            elif reply.kind == EVALUATE:
                self._note_evaluation(reply, model, caps)

    def _note_attestation(self, reply: Reply) -> None:
        """What a validator says it disputed, for the log (its attestation on chain is what counts)."""
        try:
            report = AttestationReport.from_record(reply.content.get("attestation"), sender=reply.participant)
        except MalformedMessage as malformed:
            self.progress.note(f"the attestation report of {reply.participant} is unreadable: {malformed}")
            return
        if report.disputes:
            self.progress.note(f"validator {report.validator} disputes: {printable(report.disputes, 300)}")

    def _note_evaluation(self, reply: Reply, model: Cid, caps: dict[str, int]) -> None:
        """Keeps a signed evaluation of this round's model by the participant that sent it."""
        try:
            evaluation = Evaluation.from_record(reply.content.get("evaluation"), federation=self.federation.address,
                                                chain_id=self.federation.chain_id)
            if evaluation.participant != reply.participant or evaluation.model != model:
                raise MalformedMessage(f"it evaluates {evaluation.model} for {evaluation.participant}")
            if evaluation.examples > caps.get(reply.participant, 0):
                raise MalformedMessage(f"it claims {evaluation.examples} test examples, above the member's cap")
        except MalformedMessage as malformed:
            self.progress.note(f"the evaluation of {reply.participant} is left out: {malformed}")
            return
        self._evaluations.append(evaluation)
        self._note_metrics(reply.participant, reply.content.get("metrics"))
        self._signed[reply.participant] = evaluation.metrics  # the figures metrics.csv shows as its test scores

    # ------------------------------------------------------------ helpers

    @contextmanager
    def _stage(self, stopwatch: Stopwatch, stage: str) -> Iterator[None]:
        """Times a stage of the round and counts the gas this process spends in it."""
        before = self.ledger.chain.gas_used
        with stopwatch(stage):
            yield
        self.gas[stage] = self.gas.get(stage, 0) + self.ledger.chain.gas_used - before

    def _validators(self) -> list[str]:
        reached = set(self.transport.participants())
        aggregator = self.ledger.aggregator()
        return sorted((m.address for m in self.ledger.members()
                       if m.active and Role.VALIDATOR in m.roles and m.address in reached and m.address != aggregator),
                      key=lambda address: int(address, 16))

    def _example_caps(self) -> dict[str, int]:
        """Each member's example cap, read once for a batch of replies (one call)."""
        return {m.address: m.example_cap for m in self.ledger.members()}

    def _participants(self) -> list[str]:
        """Active participants this transport reaches (a member that only validates holds no data)."""
        reached = set(self.transport.participants())
        return sorted((m.address for m in self.ledger.members()
                       if m.active and Role.PARTICIPANT in m.roles and m.address in reached),
                      key=lambda address: int(address, 16))

    def _sample(self, round_number: int) -> list[str]:
        """The participants asked to train in a round: seeded, over addresses, the same in every attempt."""
        addresses = self._participants()
        count = max(self.plan.quorum, round(len(addresses) * self.plan.fraction_train))
        return random.Random(f"{self.plan.seed}/train/{round_number}").sample(addresses, min(count, len(addresses)))

    def _wait_until(self, moment: int, round_number: int, what: str) -> None:
        """Until the chain's clock is past `moment` (moved there on a development chain)."""
        while (wait := moment + 1 - self._chain_time()) > 0:
            if self.plan.fast_forward:  # blocks may run ahead of the clock: re-check after moving it
                self.ledger.chain.increase_time(wait)
            else:
                self.progress.note(f"round {round_number}: waiting {wait} s for {what} to pass")
                time.sleep(min(wait, 5))

    def _chain_time(self) -> int:
        """Now, as the chain's next block will see it (never behind the latest block)."""
        return max(int(self.ledger.chain.web3.eth.get_block("latest")["timestamp"]), int(time.time()))

    def _exclude(self, participant: str, reason: str) -> None:
        """Records why a participant's update is not in the round (summary, metrics, terminal)."""
        self._exclusions.append((participant, reason))
        self.progress.note(f"excluded {participant}: {reason}")

    def _note_metrics(self, participant: str, record: object) -> dict[str, float]:
        """A participant's own figures (training loss, examples, bytes, gas, seconds):
        unverified, kept only if well-formed, and never a name its signed evaluation owns."""
        figures: dict[str, float] = {}
        if isinstance(record, dict):
            for name in record:
                if not (name in OWN_FIGURES or (isinstance(name, str) and name.startswith("seconds_"))):
                    continue
                try:
                    figures[str(name)] = read_float(record, name, "metrics")
                except MalformedMessage:
                    continue
        self._metrics.setdefault(participant, {}).update(figures)
        return figures

    def _record_participants(self, round_number: int) -> None:
        """One metrics.csv row per participant: its signed test figures, training loss,
        bytes, gas, seconds, and why its update was left out if it was."""
        excluded: dict[str, list[str]] = {}
        for participant, reason in self._exclusions:
            excluded.setdefault(participant, []).append(reason)
        for participant in sorted(self._metrics.keys() | self._signed.keys() | excluded.keys(),
                                  key=lambda address: int(address, 16)):
            metrics = self._metrics.get(participant, {})
            score = self._scores.get(participant)
            seconds = {key.removeprefix("seconds_"): value for key, value in metrics.items() if key.startswith("seconds_")}
            self.runlog.participant(
                round_number, participant, seconds, self._signed.get(participant, {}), train_loss=metrics.get("loss"),
                examples=_count(metrics.get("examples")), bytes=_count(metrics.get("bytes")),
                gas=_count(metrics.get("gas")), excluded="; ".join(excluded.get(participant, [])) or None,
                centre_distance=score.distance if score else None, centre_cosine=score.cosine if score else None,
                step_norm=score.norm if score else None,
            )


def _count(value: float | None) -> int | None:
    return int(value) if value is not None and value >= 0 else None
